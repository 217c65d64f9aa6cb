/* chart.c - renders a drill_report (drill.h) as a self-contained HTML page
 * with inline SVG, or as one SVG image: verdict cards, then four time-aligned
 * panels (successes/s, errors/s by kind, request duration, pool connections
 * and state) with the outage shaded across all of them. No scripts, no
 * external resources, so the file can be mailed or attached to a ticket. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "drill.h"

/* ---- layout -------------------------------------------------------------------- */

#define W 1120.0
#define ML 78.0  /* left margin: y labels */
#define MR 170.0 /* right margin: legends */
#define PW (W - ML - MR)
#define PANEL_H 150.0
#define PANEL_GAP 46.0 /* title + breathing room above each panel */
#define RIBBON_H 16.0
#define AXIS_H 40.0
#define NPANELS 4

#define C_OK "#2ca02c"
#define C_OK_LIGHT "#98df8a"
#define C_TEXT "#222"
#define C_MUTED "#666"
#define C_GRID "#e6e6e6"

struct frame {
    double x0, y0, w, h; /* plot area */
    double t_total;
};

static double xt(const struct frame *fr, double t)
{
    if (t < 0)
        t = 0;
    if (t > fr->t_total)
        t = fr->t_total;
    return fr->x0 + t / fr->t_total * fr->w;
}

static void esc(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&':
            fputs("&amp;", f);
            break;
        case '<':
            fputs("&lt;", f);
            break;
        case '>':
            fputs("&gt;", f);
            break;
        case '"':
            fputs("&quot;", f);
            break;
        default:
            fputc(*s, f);
        }
    }
}

/* 1, 2, 2.5, 5 x 10^k, at least v */
static double nice_ceil(double v)
{
    if (v <= 0)
        return 1;
    double p = pow(10, floor(log10(v)));
    static const double m[] = {1, 1.2, 1.6, 2, 2.4, 3, 4, 5, 6, 8, 10};
    for (int i = 0; i < 11; i++)
        if (m[i] * p >= v * 0.999)
            return m[i] * p;
    return 10 * p;
}

static void fmt_count(char *buf, size_t len, double v)
{
    if (v >= 1e6)
        snprintf(buf, len, "%gM", v / 1e6);
    else if (v >= 1e4)
        snprintf(buf, len, "%gk", v / 1e3);
    else
        snprintf(buf, len, "%g", v);
}

static void fmt_ms(char *buf, size_t len, double ms)
{
    if (ms < 1)
        snprintf(buf, len, "%g µs", ms * 1000);
    else if (ms < 1000)
        snprintf(buf, len, "%g ms", ms);
    else
        snprintf(buf, len, "%g s", ms / 1000);
}

static void text(FILE *f, double x, double y, const char *anchor, const char *style, const char *s)
{
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\" %s>", x, y, anchor,
            style ? style : "");
    esc(f, s);
    fputs("</text>\n", f);
}

/* Linear y axis with gridlines; returns nothing, labels on the left. */
static void y_axis_linear(FILE *f, const struct frame *fr, double ymax, int counts)
{
    char lab[32];
    for (int i = 0; i <= 4; i++) {
        double v = ymax * i / 4, y = fr->y0 + fr->h - fr->h * i / 4;
        fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>\n",
                fr->x0, fr->x0 + fr->w, y, y, C_GRID);
        if (counts)
            fmt_count(lab, sizeof(lab), v);
        else
            snprintf(lab, sizeof(lab), "%g", v);
        text(f, fr->x0 - 6, y + 4, "end", "class=\"ax\"", lab);
    }
}

static void legend(FILE *f, const struct frame *fr, int row, const char *color, const char *label,
                   int line)
{
    double x = fr->x0 + fr->w + 14, y = fr->y0 + 8 + row * 17;
    if (line)
        fprintf(f,
                "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                "stroke-width=\"2.5\"%s/>\n",
                x, x + 14, y, y, color, line == 2 ? " stroke-dasharray=\"4 3\"" : "");
    else
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"12\" height=\"10\" fill=\"%s\"/>\n", x,
                y - 5, color);
    text(f, x + 19, y + 4, "start", "class=\"lg\"", label);
}

static void panel_title(FILE *f, const struct frame *fr, const char *title, const char *sub)
{
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"pt\">", fr->x0, fr->y0 - 10);
    esc(f, title);
    if (sub) {
        fputs("<tspan class=\"ps\" dx=\"10\">", f);
        esc(f, sub);
        fputs("</tspan>", f);
    }
    fputs("</text>\n", f);
}

/* Outage band and vertical markers behind a panel's data. */
static void backdrop(FILE *f, const struct frame *fr, const drill_report *r)
{
    int refuse = strcmp(r->mode, "refuse") == 0;
    double a = xt(fr, r->outage_start), b = xt(fr, r->outage_end);
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"/>\n", a,
            fr->y0, b - a, fr->h, refuse ? "#fde3e1" : "#e4e4ee");
    fprintf(f,
            "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
            "stroke=\"#ccc\"/>\n",
            fr->x0, fr->y0, fr->w, fr->h);
}

static void markers(FILE *f, const struct frame *fr, const drill_report *r, int labels)
{
    struct {
        double t;
        const char *color, *label;
    } m[3] = {
        {r->pool_down_at, "#d62728", "pool DOWN"},
        {r->pool_up_at, "#2ca02c", "pool UP"},
        {r->first_ok_after, "#1f77b4", "first success"},
    };
    double last_x = -100;
    for (int i = 0; i < 3; i++) {
        if (m[i].t < 0)
            continue;
        double x = xt(fr, m[i].t);
        fprintf(f,
                "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                "stroke-width=\"1.2\" stroke-dasharray=\"5 3\"/>\n",
                x, x, fr->y0, fr->y0 + fr->h, m[i].color);
        if (labels) {
            /* pool UP and first success often coincide: put the second label lower */
            double y = fr->y0 + 12 + (x - last_x < 90 ? 14 : 0);
            char st[64];
            snprintf(st, sizeof(st), "class=\"mk\" fill=\"%s\"", m[i].color);
            text(f, x + 4, y, "start", st, m[i].label);
            last_x = x;
        }
    }
}

/* A stepped path of (sample interval, value) for values from get(); values
 * <= 0 break the line when `gaps` (used on the log scale). */
typedef double (*getter)(const drill_sample *s, const void *arg);

static void step_line(FILE *f, const struct frame *fr, const drill_report *r, getter get,
                      const void *arg, double (*ymap)(const struct frame *, double, const void *),
                      const void *yarg, const char *color, double width, const char *dash, int gaps)
{
    int open = 0;
    fprintf(f,
            "<path fill=\"none\" stroke=\"%s\" stroke-width=\"%.1f\" "
            "stroke-linejoin=\"round\"%s%s%s d=\"",
            color, width, dash ? " stroke-dasharray=\"" : "", dash ? dash : "", dash ? "\"" : "");
    for (int i = 0; i < r->nsamples; i++) {
        const drill_sample *s = &r->samples[i];
        double v = get(s, arg);
        if (gaps && v <= 0) {
            open = 0;
            continue;
        }
        double y = ymap(fr, v, yarg);
        double x1 = xt(fr, s->t - r->interval_s), x2 = xt(fr, s->t);
        fprintf(f, "%s%.1f %.1f L%.1f %.1f ", open ? "L" : "M", x1, y, x2, y);
        open = 1;
    }
    fputs("\"/>\n", f);
}

static double y_lin(const struct frame *fr, double v, const void *arg)
{
    double ymax = *(const double *)arg;
    if (v > ymax)
        v = ymax;
    return fr->y0 + fr->h - v / ymax * fr->h;
}

struct logscale {
    double lo, hi; /* ms */
};

static double y_log(const struct frame *fr, double v, const void *arg)
{
    const struct logscale *ls = arg;
    if (v < ls->lo)
        v = ls->lo;
    if (v > ls->hi)
        v = ls->hi;
    return fr->y0 + fr->h - (log10(v) - log10(ls->lo)) / (log10(ls->hi) - log10(ls->lo)) * fr->h;
}

static double g_ok(const drill_sample *s, const void *a)
{
    (void)a;
    return s->ok_per_s;
}
static double g_ok_p50(const drill_sample *s, const void *a)
{
    (void)a;
    return s->ok_p50_ms;
}
static double g_ok_p99(const drill_sample *s, const void *a)
{
    (void)a;
    return s->ok_p99_ms;
}
static double g_err_p50(const drill_sample *s, const void *a)
{
    (void)a;
    return s->err_p50_ms;
}
static double g_err_max(const drill_sample *s, const void *a)
{
    (void)a;
    return s->err_max_ms;
}
static double g_waiting(const drill_sample *s, const void *a)
{
    (void)a;
    return s->waiting;
}

/* ---- the four panels ------------------------------------------------------- */

static void panel_ok(FILE *f, const struct frame *fr, const drill_report *r)
{
    double ymax = 0;
    for (int i = 0; i < r->nsamples; i++)
        if (r->samples[i].ok_per_s > ymax)
            ymax = r->samples[i].ok_per_s;
    if (r->rate > ymax)
        ymax = r->rate;
    ymax = nice_ceil(ymax * 1.05);
    panel_title(f, fr, "Successful requests per second", NULL);
    backdrop(f, fr, r);
    y_axis_linear(f, fr, ymax, 1);
    /* filled area under the success rate */
    fprintf(f, "<path fill=\"%s\" fill-opacity=\"0.35\" stroke=\"none\" d=\"M%.1f %.1f ",
            C_OK_LIGHT, fr->x0, fr->y0 + fr->h);
    for (int i = 0; i < r->nsamples; i++) {
        const drill_sample *s = &r->samples[i];
        double y = y_lin(fr, s->ok_per_s, &ymax);
        fprintf(f, "L%.1f %.1f L%.1f %.1f ", xt(fr, s->t - r->interval_s), y, xt(fr, s->t), y);
    }
    fprintf(f, "L%.1f %.1f Z\"/>\n", xt(fr, r->nsamples ? r->samples[r->nsamples - 1].t : 0),
            fr->y0 + fr->h);
    step_line(f, fr, r, g_ok, NULL, y_lin, &ymax, C_OK, 2, NULL, 0);
    if (r->tps_before > 0) {
        double y = y_lin(fr, r->tps_before * 0.9, &ymax);
        fprintf(f,
                "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                "stroke-dasharray=\"2 3\"/>\n",
                fr->x0, fr->x0 + fr->w, y, y, C_MUTED);
    }
    markers(f, fr, r, 1);
    legend(f, fr, 0, C_OK, "successes/s", 1);
    legend(f, fr, 1, C_MUTED, "90% of before", 2);
}

static void panel_errors(FILE *f, const struct frame *fr, const drill_report *r)
{
    double ymax = 0;
    int used[DE_NKINDS] = {0};
    for (int i = 0; i < r->nsamples; i++) {
        double sum = 0;
        for (int k = 0; k < DE_NKINDS; k++) {
            sum += r->samples[i].err_per_s[k];
            if (r->samples[i].err_per_s[k] > 0)
                used[k] = 1;
        }
        if (sum > ymax)
            ymax = sum;
    }
    ymax = nice_ceil(ymax > 0 ? ymax * 1.05 : 1);
    panel_title(f, fr, "Failed requests per second, by kind", NULL);
    backdrop(f, fr, r);
    y_axis_linear(f, fr, ymax, 1);
    /* stacked bars, one per interval */
    double bw = fr->w / (fr->t_total / r->interval_s);
    for (int i = 0; i < r->nsamples; i++) {
        const drill_sample *s = &r->samples[i];
        double base = 0;
        double x = xt(fr, s->t - r->interval_s);
        for (int k = 0; k < DE_NKINDS; k++) {
            double v = s->err_per_s[k];
            if (v <= 0)
                continue;
            double y1 = y_lin(fr, base + v, &ymax), y0 = y_lin(fr, base, &ymax);
            fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"/>\n",
                    x, y1, bw > 1.5 ? bw - 0.5 : bw, y0 - y1 < 0.8 ? 0.8 : y0 - y1,
                    drill_err_colors[k]);
            base += v;
        }
    }
    markers(f, fr, r, 0);
    int row = 0;
    for (int k = 0; k < DE_NKINDS; k++)
        if (used[k])
            legend(f, fr, row++, drill_err_colors[k], drill_err_labels[k], 0);
    if (!row)
        text(f, fr->x0 + fr->w / 2, fr->y0 + fr->h / 2, "middle", "class=\"lg\"",
             "no request failed");
}

static void panel_latency(FILE *f, const struct frame *fr, const drill_report *r)
{
    struct logscale ls = {0.01, 10};
    double top = r->deadline_ms;
    for (int i = 0; i < r->nsamples; i++) {
        if (r->samples[i].ok_max_ms > top)
            top = r->samples[i].ok_max_ms;
        if (r->samples[i].err_max_ms > top)
            top = r->samples[i].err_max_ms;
    }
    while (ls.hi < top * 1.2)
        ls.hi *= 10;
    panel_title(f, fr, "Request duration",
                "(log scale; failed requests in red: how long they took to fail)");
    backdrop(f, fr, r);
    char lab[32];
    int decades = (int)lround(log10(ls.hi / ls.lo));
    for (int d = 0; d <= decades; d++) {
        double v = ls.lo * pow(10, d);
        double y = y_log(fr, v, &ls);
        fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>\n",
                fr->x0, fr->x0 + fr->w, y, y, C_GRID);
        fmt_ms(lab, sizeof(lab), v);
        text(f, fr->x0 - 6, y + 4, "end", "class=\"ax\"", lab);
    }
    double yd = y_log(fr, r->deadline_ms, &ls);
    fprintf(f,
            "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#7f0000\" "
            "stroke-dasharray=\"6 3\"/>\n",
            fr->x0, fr->x0 + fr->w, yd, yd);
    text(f, fr->x0 + 4, yd - 4, "start", "class=\"mk\" fill=\"#7f0000\"", "request deadline");
    step_line(f, fr, r, g_ok_p50, NULL, y_log, &ls, C_OK_LIGHT, 2, NULL, 1);
    step_line(f, fr, r, g_ok_p99, NULL, y_log, &ls, C_OK, 2, NULL, 1);
    step_line(f, fr, r, g_err_p50, NULL, y_log, &ls, "#ff9896", 2, NULL, 1);
    step_line(f, fr, r, g_err_max, NULL, y_log, &ls, "#d62728", 2, "4 2", 1);
    markers(f, fr, r, 0);
    legend(f, fr, 0, C_OK, "success p99", 1);
    legend(f, fr, 1, C_OK_LIGHT, "success p50", 1);
    legend(f, fr, 2, "#ff9896", "failure p50", 1);
    legend(f, fr, 3, "#d62728", "failure max", 2);
}

static const char *state_color(dbpool_state s)
{
    switch (s) {
    case DBPOOL_STATE_UP:
        return "#2ca02c";
    case DBPOOL_STATE_DOWN:
        return "#d62728";
    case DBPOOL_STATE_PAUSED:
        return "#9467bd";
    case DBPOOL_STATE_STOPPED:
        return "#7f0000";
    case DBPOOL_STATE_STARTING:
        return "#bbbbbb";
    default:
        return "#444444";
    }
}

static void panel_pool(FILE *f, const struct frame *fr, const drill_report *r)
{
    static const struct {
        const char *label, *color;
    } layers[] = {
        {"busy", "#1f77b4"},       {"idle", "#aec7e8"},    {"pinging", "#17becf"},
        {"connecting", "#f2c14e"}, {"backoff", "#ff7f0e"},
    };
    double ymax = 1;
    for (int i = 0; i < r->nsamples; i++) {
        const drill_sample *s = &r->samples[i];
        double sum = s->busy + s->idle + s->pinging + s->connecting + s->backoff;
        if (sum > ymax)
            ymax = sum;
        if (s->waiting > ymax)
            ymax = s->waiting;
        if (s->size > ymax)
            ymax = s->size;
    }
    ymax = 4 * ceil(ymax / 4); /* whole connections on every gridline */
    panel_title(f, fr, "Pool connections by state, callers waiting, pool state", NULL);
    backdrop(f, fr, r);
    y_axis_linear(f, fr, ymax, 1);
    for (int L = (int)(sizeof(layers) / sizeof(layers[0])) - 1; L >= 0; L--) {
        /* draw cumulative layers back to front: each covers 0..sum(0..L) */
        fprintf(f, "<path fill=\"%s\" stroke=\"none\" d=\"", layers[L].color);
        for (int i = 0; i < r->nsamples; i++) {
            const drill_sample *s = &r->samples[i];
            double v[5] = {s->busy, s->idle, s->pinging, s->connecting, s->backoff};
            double cum = 0;
            for (int j = 0; j <= L; j++)
                cum += v[j];
            double y = y_lin(fr, cum, &ymax);
            fprintf(f, "%s%.1f %.1f L%.1f %.1f ", i ? "L" : "M", xt(fr, s->t - r->interval_s),
                    fr->y0 + fr->h, xt(fr, s->t - r->interval_s), y);
            fprintf(f, "L%.1f %.1f L%.1f %.1f ", xt(fr, s->t), y, xt(fr, s->t), fr->y0 + fr->h);
        }
        fputs("Z\"/>\n", f);
    }
    step_line(f, fr, r, g_waiting, NULL, y_lin, &ymax, "#9467bd", 2, "5 2", 0);
    markers(f, fr, r, 0);
    for (size_t L = 0; L < sizeof(layers) / sizeof(layers[0]); L++)
        legend(f, fr, (int)L, layers[L].color, layers[L].label, 0);
    legend(f, fr, 5, "#9467bd", "callers waiting", 2);

    /* pool state ribbon under the panel */
    double ry = fr->y0 + fr->h + 6;
    text(f, fr->x0 - 6, ry + RIBBON_H - 4, "end", "class=\"ax\"", "state");
    int i = 0;
    while (i < r->nsamples) {
        int j = i;
        while (j + 1 < r->nsamples && r->samples[j + 1].state == r->samples[i].state)
            j++;
        double x1 = xt(fr, r->samples[i].t - r->interval_s), x2 = xt(fr, r->samples[j].t);
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"/>\n", x1,
                ry, x2 - x1, RIBBON_H, state_color(r->samples[i].state));
        if (x2 - x1 > 40)
            text(f, (x1 + x2) / 2, ry + RIBBON_H - 4, "middle", "class=\"rb\"",
                 dbpool_state_name(r->samples[i].state));
        i = j + 1;
    }
}

static void x_axis(FILE *f, const struct frame *top, const struct frame *bottom, double y_axis)
{
    static const double steps[] = {0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600};
    double step = steps[0];
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        step = steps[i];
        if (top->t_total / step <= 16)
            break;
    }
    char lab[32];
    int nticks = (int)floor(top->t_total / step + 1e-9);
    for (int i = 0; i <= nticks; i++) {
        double t = i * step;
        double x = xt(top, t);
        fprintf(f,
                "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#000\" "
                "stroke-opacity=\"0.06\"/>\n",
                x, x, top->y0, bottom->y0 + bottom->h);
        snprintf(lab, sizeof(lab), "%g s", t);
        text(f, x, y_axis + 14, "middle", "class=\"ax\"", lab);
    }
    text(f, top->x0 + top->w / 2, y_axis + 32, "middle", "class=\"ax\"",
         "time since the load started");
}

/* All four panels with the outage label, starting at y; returns the height. */
static double charts(FILE *f, const drill_report *r, double y)
{
    struct frame fr[NPANELS];
    double t_total = r->before_s + r->outage_s + r->after_s;
    double yy = y + 22; /* room for the outage label */

    for (int i = 0; i < NPANELS; i++) {
        yy += PANEL_GAP;
        fr[i].x0 = ML;
        fr[i].y0 = yy;
        fr[i].w = PW;
        fr[i].h = PANEL_H;
        fr[i].t_total = t_total > 0 ? t_total : 1;
        yy += PANEL_H;
    }
    yy += RIBBON_H + 8; /* state ribbon under the last panel */

    /* outage label above everything */
    int refuse = strcmp(r->mode, "refuse") == 0;
    char lab[160];
    snprintf(lab, sizeof(lab), "%s for %g s",
             refuse ? "database away: connections reset, new ones refused"
                    : "database away: network black-hole",
             r->outage_s);
    double a = xt(&fr[0], r->outage_start), b = xt(&fr[0], r->outage_end);
    double need = 7.0 * (double)strlen(lab) + 16; /* about 7 px per character at 12 px */
    if (b - a < need) {
        double mid = (a + b) / 2;
        a = mid - need / 2;
        b = mid + need / 2;
        if (a < ML) {
            b += ML - a;
            a = ML;
        }
    }
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"20\" rx=\"3\" fill=\"%s\"/>\n",
            a, y + 4, b - a, refuse ? "#f4b6b0" : "#c5c5d8");
    text(f, (a + b) / 2, y + 18, "middle", "class=\"ol\"", lab);

    panel_ok(f, &fr[0], r);
    panel_errors(f, &fr[1], r);
    panel_latency(f, &fr[2], r);
    panel_pool(f, &fr[3], r);
    x_axis(f, &fr[0], &fr[3], yy - 4);
    return yy + AXIS_H - y;
}

static const char *STYLE_SVG =
    "text{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;fill:#222}"
    ".ax{font-size:11px;fill:#555}.lg{font-size:11.5px}.pt{font-size:14px;font-weight:600}"
    ".ps{font-size:11.5px;font-weight:400;fill:#666}.mk{font-size:11px;font-weight:600;paint-order:"
    "stroke;stroke:#fff;stroke-width:3px}"
    ".ol{font-size:12px;font-weight:600}.rb{font-size:10.5px;fill:#fff;font-weight:600}"
    ".h1{font-size:20px;font-weight:700}.sm{font-size:12.5px;fill:#444}"
    ".s-good{fill:#1a7f37;font-weight:700}.s-bad{fill:#c62828;font-weight:700}"
    ".s-warn{fill:#b26a00;font-weight:700}";

static double charts_height(void)
{
    return 22 + NPANELS * (PANEL_GAP + PANEL_H) + RIBBON_H + 8 + AXIS_H;
}

/* A duration for prose: "3.1 µs", "0.27 ms", "2002 ms". */
static const char *dur(char *buf, size_t len, double ms)
{
    if (ms < 0.1)
        snprintf(buf, len, "%.2g µs", ms * 1000);
    else if (ms < 100)
        snprintf(buf, len, "%.2g ms", ms);
    else
        snprintf(buf, len, "%.0f ms", ms);
    return buf;
}

/* ---- verdicts ---------------------------------------------------------------- */

enum verdict_level { V_GOOD, V_WARN, V_BAD, V_INFO };

struct verdict {
    enum verdict_level level;
    char title[64];
    char line1[200], line2[200];
};

static void verdicts(const drill_report *r, struct verdict v[4])
{
    char d1[32], d2[32];

    memset(v, 0, 4 * sizeof(*v));
    /* 1. failing fast */
    snprintf(v[0].title, sizeof(v[0].title), "Failed fast?");
    if (!r->failed_outage) {
        v[0].level = V_INFO;
        snprintf(v[0].line1, sizeof(v[0].line1), "No request failed.");
    } else if (r->fail_p50_ms < 10 && r->pool_down_at >= 0 &&
               r->fail_max_before_down_ms > r->deadline_ms / 2) {
        /* typical of a black-hole: nothing fails until timeouts decide the
         * database is gone; from then on, failures are immediate */
        v[0].level = V_WARN;
        snprintf(v[0].title, sizeof(v[0].title), "Failed fast once DOWN");
        snprintf(v[0].line1, sizeof(v[0].line1),
                 "Until the pool went DOWN (%.2f s into the outage) failing requests waited up "
                 "to %.0f ms (deadline %.0f ms).",
                 r->pool_down_at - r->outage_start, r->fail_max_before_down_ms, r->deadline_ms);
        snprintf(v[0].line2, sizeof(v[0].line2),
                 "Of all %llu failures, half returned within %s, 99%% within %s.",
                 (unsigned long long)r->failed_outage, dur(d1, sizeof(d1), r->fail_p50_ms),
                 dur(d2, sizeof(d2), r->fail_p99_ms));
    } else {
        v[0].level = r->fail_p50_ms < 10                   ? V_GOOD
                     : r->fail_p50_ms < r->deadline_ms / 2 ? V_WARN
                                                           : V_BAD;
        snprintf(v[0].title, sizeof(v[0].title), "%s",
                 v[0].level == V_GOOD ? "Failed fast" : "Failures were slow");
        snprintf(v[0].line1, sizeof(v[0].line1),
                 "Half of the %llu failed requests returned within %s, 99%% within %s.",
                 (unsigned long long)r->failed_outage, dur(d1, sizeof(d1), r->fail_p50_ms),
                 dur(d2, sizeof(d2), r->fail_p99_ms));
        if (r->pool_down_at >= 0)
            snprintf(v[0].line2, sizeof(v[0].line2),
                     "Pool DOWN %.2f s into the outage: callers then get 'unavailable' at once.",
                     r->pool_down_at - r->outage_start);
        else
            snprintf(v[0].line2, sizeof(v[0].line2), "The pool never went DOWN.");
    }
    /* 2. recovery */
    if (r->recovered) {
        v[1].level = V_GOOD;
        snprintf(v[1].title, sizeof(v[1].title), "Recovered in %.2f s",
                 r->full_tps_at - r->outage_end);
        snprintf(v[1].line1, sizeof(v[1].line1),
                 "First success %.2f s after the database came back; 90%% of the old "
                 "throughput after %.2f s.",
                 r->first_ok_after - r->outage_end, r->full_tps_at - r->outage_end);
    } else {
        v[1].level = V_BAD;
        snprintf(v[1].title, sizeof(v[1].title), "Did not recover");
        if (r->first_ok_after >= 0)
            snprintf(v[1].line1, sizeof(v[1].line1),
                     "First success %.2f s after the database came back, but throughput "
                     "stayed below 90%% of before.",
                     r->first_ok_after - r->outage_end);
        else
            snprintf(v[1].line1, sizeof(v[1].line1),
                     "No request succeeded in the %.0f s after the database came back.",
                     r->after_s);
    }
    if (r->pool_up_at >= 0)
        snprintf(v[1].line2, sizeof(v[1].line2), "Pool UP %.2f s after the database came back.",
                 r->pool_up_at - r->outage_end);
    /* 3. bounded */
    int bounded = r->longest_ms <= r->deadline_ms * 1.05 + 50;
    v[2].level = bounded ? V_GOOD : V_BAD;
    snprintf(v[2].title, sizeof(v[2].title), "%s",
             bounded ? "Nothing hung" : "A request outlived its deadline");
    snprintf(v[2].line1, sizeof(v[2].line1), "Longest request: %.0f ms (deadline %.0f ms).",
             r->longest_ms, r->deadline_ms);
    /* 4. throughput */
    v[3].level = V_INFO;
    snprintf(v[3].title, sizeof(v[3].title), "Throughput");
    snprintf(v[3].line1, sizeof(v[3].line1), "Before %.0f/s, after %.0f/s%s.", r->tps_before,
             r->tps_after, r->rate > 0 ? " (paced load)" : "");
    snprintf(v[3].line2, sizeof(v[3].line2), "%llu succeeded, %llu failed in total.",
             (unsigned long long)r->ok_total, (unsigned long long)r->failed_total);
}

static const char *level_class(enum verdict_level l)
{
    return l == V_GOOD ? "good" : l == V_WARN ? "warn" : l == V_BAD ? "bad" : "info";
}

/* ---- outputs ---------------------------------------------------------------- */

static const char *event_name(dbpool_event_type t)
{
    switch (t) {
    case DBPOOL_EV_CONNECTED:
        return "connected";
    case DBPOOL_EV_DISCONNECTED:
        return "disconnected";
    case DBPOOL_EV_CONNECT_FAILED:
        return "connect failed";
    case DBPOOL_EV_UP:
        return "pool UP";
    case DBPOOL_EV_DOWN:
        return "pool DOWN";
    case DBPOOL_EV_DROPPED:
        return "request dropped";
    case DBPOOL_EV_HOLD_TIMEOUT:
        return "hold timeout";
    case DBPOOL_EV_LEAK_SUSPECTED:
        return "leak suspected";
    default:
        return "?";
    }
}

void drill_write_html(FILE *f, const drill_report *r)
{
    struct verdict v[4];
    double h = charts_height();

    verdicts(r, v);
    fprintf(f,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
            "<title>dbpool drill: %s, %g s outage</title>\n<style>\n",
            r->mode, r->outage_s);
    fputs("body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#222;"
          "margin:24px auto;max-width:1160px;padding:0 16px}\n"
          "h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}"
          ".meta{color:#555;font-size:13px;margin:2px 0}\n"
          ".cards{display:flex;gap:12px;margin:18px 0 4px;flex-wrap:wrap}"
          ".card{flex:1 1 240px;border:1px solid #ddd;border-left-width:6px;border-radius:6px;"
          "padding:10px 14px;background:#fafafa}\n"
          ".card h3{margin:0 0 6px;font-size:16px}.card p{margin:3px 0;font-size:13px;color:#333}"
          ".card.good{border-left-color:#2ca02c}.card.good h3{color:#1a7f37}"
          ".card.warn{border-left-color:#e8a33d}.card.warn h3{color:#b26a00}"
          ".card.bad{border-left-color:#d62728}.card.bad h3{color:#c62828}"
          ".card.info{border-left-color:#1f77b4}\n"
          "table{border-collapse:collapse;font-size:12.5px}td,th{padding:3px 10px 3px 0;"
          "text-align:left;vertical-align:top}th{color:#555;font-weight:600}"
          "td.t{text-align:right;font-variant-numeric:tabular-nums;color:#555}\n"
          "code{font-size:12px;background:#f3f3f3;padding:1px 4px;border-radius:3px}\n",
          f);
    fprintf(f, "svg %s\n</style></head><body>\n", "{display:block}");
    fprintf(f, "<h1>dbpool drill: database %s for %g s</h1>\n",
            strcmp(r->mode, "refuse") == 0 ? "refusing connections (open ones reset)"
                                           : "behind a network black-hole",
            r->outage_s);
    fprintf(f, "<p class=\"meta\">%s &middot; database <code>", r->date);
    esc(f, r->database);
    fprintf(f, "</code> via the fault relay to %s</p>\n", r->target);
    fprintf(f, "<p class=\"meta\">%d clients, %s, workload <code>", r->clients,
            r->rate > 0 ? "paced" : "unpaced (as fast as possible)");
    esc(f, r->workload);
    if (r->rate > 0)
        fprintf(f, "</code>, offered %.0f requests/s, ", r->rate);
    else
        fputs("</code>, ", f);
    fprintf(f, "deadline %.0f ms per request (checkout + query), pool of %d</p>\n", r->deadline_ms,
            r->pool_size);
    fputs("<p class=\"meta\">Run again with <code>", f);
    esc(f, r->command);
    fputs("</code></p>\n", f);

    fputs("<div class=\"cards\">\n", f);
    for (int i = 0; i < 4; i++) {
        fprintf(f, "<div class=\"card %s\"><h3>", level_class(v[i].level));
        esc(f, v[i].title);
        fputs("</h3><p>", f);
        esc(f, v[i].line1);
        fputs("</p>", f);
        if (v[i].line2[0]) {
            fputs("<p>", f);
            esc(f, v[i].line2);
            fputs("</p>", f);
        }
        fputs("</div>\n", f);
    }
    fputs("</div>\n", f);

    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
            "viewBox=\"0 0 %.0f %.0f\"><style>%s</style>\n",
            W, h, W, h, STYLE_SVG);
    charts(f, r, 0);
    fputs("</svg>\n", f);

    /* what the pool reported, with repeats folded */
    fputs("<h2>Pool events</h2>\n<table><tr><th>time</th><th>event</th><th>detail</th></tr>\n", f);
    int rows = 0;
    for (int i = 0; i < r->nevents && rows < 80; rows++) {
        int j = i;
        while (j + 1 < r->nevents && r->events[j + 1].type == r->events[i].type &&
               strcmp(r->events[j + 1].detail, r->events[i].detail) == 0)
            j++;
        /* when: "start" (while the pool filled up), one time, or a range */
        char when[64], count[24] = "";
        double t0 = r->events[i].t, t1 = r->events[j].t;
        if (t1 < 0)
            snprintf(when, sizeof(when), "start");
        else if (t1 - t0 < 0.005)
            snprintf(when, sizeof(when), "%.2f s", t1);
        else
            snprintf(when, sizeof(when), "%.2f&ndash;%.2f s", t0 < 0 ? 0.0 : t0, t1);
        if (j > i)
            snprintf(count, sizeof(count), " &times;%d", j - i + 1);
        fprintf(f, "<tr><td class=\"t\">%s</td><td>%s%s</td><td>", when,
                event_name(r->events[i].type), count);
        esc(f, r->events[i].detail);
        fputs("</td></tr>\n", f);
        i = j + 1;
    }
    if (rows == 80)
        fputs("<tr><td></td><td colspan=\"2\">&hellip; (more events not shown)</td></tr>\n", f);
    if (r->events_lost)
        fprintf(f, "<tr><td></td><td colspan=\"2\">%d events not recorded (log full)</td></tr>\n",
                r->events_lost);
    fputs("</table>\n", f);

    fputs("<h2>Failed requests from the outage on, by kind</h2>\n<table>\n", f);
    for (int k = 0; k < DE_NKINDS; k++)
        if (r->failed_by_kind[k])
            fprintf(f, "<tr><td class=\"t\">%llu</td><td>%s</td></tr>\n",
                    (unsigned long long)r->failed_by_kind[k], drill_err_labels[k]);
    if (!r->failed_outage)
        fputs("<tr><td>none</td></tr>\n", f);
    fputs("</table>\n", f);
    if (r->missed_total)
        fprintf(f,
                "<p>%llu requests (%llu from the outage on) were due but <b>not sent on time</b>: "
                "the clients were still busy with earlier requests, so the offered rate was not "
                "reached. They are not counted as failures above.</p>\n",
                (unsigned long long)r->missed_total, (unsigned long long)r->missed_outage);

    fputs("<h2>Set-up</h2>\n<table>\n", f);
    fputs("<tr><th>command</th><td><code>", f);
    esc(f, r->command);
    fputs("</code></td></tr>\n<tr><th>wall clock</th><td>", f);
    esc(f, r->date);
    fputs(" to ", f);
    esc(f, r->end_date);
    fputs("</td></tr>\n<tr><th>versions</th><td>", f);
    esc(f, r->versions);
    fputs("</td></tr>\n", f);
    fprintf(f,
            "<tr><th>phases</th><td>before %g s, outage %g s, after %g s; one sample every "
            "%g ms</td></tr>\n",
            r->before_s, r->outage_s, r->after_s, r->interval_s * 1000);
    fputs("<tr><th>pool options</th><td><code>", f);
    esc(f, r->pool_options);
    fputs("</code></td></tr>\n", f);
    fputs("<tr><th>reading it</th><td>Shaded: the database is away. Dashed lines: pool DOWN "
          "(red), pool UP (green), first success after the outage (blue). 'Failed fast' "
          "means callers got an error at once instead of waiting for their deadline.</td></tr>\n",
          f);
    fputs("</table>\n<p class=\"meta\">Made by <code>dbpool drill</code>.</p>\n</body></html>\n",
          f);
}

void drill_write_svg(FILE *f, const drill_report *r)
{
    struct verdict v[4];
    double head = 64 + 4 * 38 + 10;
    double h = head + charts_height();
    char buf[1600];

    verdicts(r, v);
    fprintf(f,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
            "viewBox=\"0 0 %.0f %.0f\"><style>%s</style>\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"#fff\"/>\n",
            W, h, W, h, STYLE_SVG);
    snprintf(buf, sizeof(buf), "dbpool drill: database %s for %g s",
             strcmp(r->mode, "refuse") == 0 ? "refusing connections (open ones reset)"
                                            : "behind a network black-hole",
             r->outage_s);
    text(f, ML, 28, "start", "class=\"h1\"", buf);
    snprintf(buf, sizeof(buf), "%s  ·  %s  ·  %d clients, %s, deadline %.0f ms, pool of %d",
             r->date, r->database, r->clients, r->workload, r->deadline_ms, r->pool_size);
    text(f, ML, 48, "start", "class=\"sm\"", buf);
    for (int i = 0; i < 4; i++) {
        double y = 64 + i * 38 + 14;
        char cls[32];
        snprintf(cls, sizeof(cls), "class=\"%s%s\"", v[i].level == V_INFO ? "" : "s-",
                 v[i].level == V_INFO ? "pt" : level_class(v[i].level));
        text(f, ML, y, "start", cls, v[i].title);
        snprintf(buf, sizeof(buf), "%s %s", v[i].line1, v[i].line2);
        text(f, ML, y + 16, "start", "class=\"sm\"", buf);
    }
    fprintf(f, "<g>\n");
    charts(f, r, head);
    fputs("</g>\n</svg>\n", f);
}
