/* drill.h - the data an outage drill collects (drill.c) and renders as a
 * timeline report (chart.c: HTML with inline SVG, or SVG alone). */
#ifndef DBPOOL_CLI_DRILL_H
#define DBPOOL_CLI_DRILL_H

#include <stdint.h>
#include <stdio.h>

#include "dbpool.h"

/* How a request failed. */
enum drill_err {
    DE_UNAVAILABLE = 0, /* checkout failed fast: pool DOWN */
    DE_TIMEOUT,         /* checkout deadline reached in the queue */
    DE_DROPPED,         /* dropped from the queue (CoDel) */
    DE_CONNLOST,        /* connection lost during the query */
    DE_DEADLINE,        /* query got no answer before the request deadline */
    DE_SQL,             /* the server returned an error */
    DE_OTHER,           /* any other checkout error */
    DE_NKINDS
};

extern const char *const drill_err_names[DE_NKINDS];  /* "unavailable", ... */
extern const char *const drill_err_labels[DE_NKINDS]; /* "pool down (fail fast)", ... */
extern const char *const drill_err_colors[DE_NKINDS]; /* "#d62728", ... */

enum drill_phase { PH_BEFORE = 0, PH_OUTAGE, PH_AFTER };

/* One sampling interval. Rates are per second; latencies in ms (0 = none). */
typedef struct drill_sample {
    double t; /* end of the interval, seconds since the load started */
    int phase;
    double ok_per_s;
    double missed_per_s; /* requests due but not sent on time (paced load, clients busy) */
    double err_per_s[DE_NKINDS];
    double ok_p50_ms, ok_p99_ms, ok_max_ms;
    double err_p50_ms, err_max_ms; /* how long failing requests took */
    dbpool_state state;
    int idle, busy, connecting, pinging, backoff, waiting, size;
} drill_sample;

typedef struct drill_event {
    double t; /* seconds since the load started */
    dbpool_event_type type;
    char detail[200];
} drill_event;

typedef struct drill_report {
    /* set-up */
    char date[64];        /* wall clock when the load started */
    char end_date[64];    /* ... and when it ended */
    char command[4096];   /* the command line that reproduces it, secrets redacted */
    char versions[200];   /* dbpool, libpq and server versions */
    const char *database; /* password-free (dbpool_pg_redact), owned by the caller */
    char target[300];     /* host:port the relay forwarded to */
    const char *mode;     /* "refuse" or "blackhole" */
    char workload[64];
    int clients, pool_size;
    double rate;        /* offered load, requests/s in total (0 = as fast as possible) */
    double deadline_ms; /* per-request budget (checkout + query) */
    double before_s, outage_s, after_s, interval_s;
    char pool_options[512];

    /* timeline */
    drill_sample *samples;
    int nsamples;
    drill_event *events;
    int nevents;
    int events_lost;

    /* findings (seconds since the load started; < 0 = did not happen) */
    double outage_start, outage_end;
    double first_error;    /* first failed request after the outage began */
    double pool_down_at;   /* first DOWN event after the outage began */
    double pool_up_at;     /* first UP event after the outage ended */
    double first_ok_after; /* first success completing after the outage ended */
    double full_tps_at;    /* first interval after the end at >= 90% of before */
    double tps_before, tps_after;
    uint64_t ok_total, failed_total, failed_outage;
    uint64_t missed_total, missed_outage; /* not sent on time (paced load) */
    uint64_t failed_by_kind[DE_NKINDS];
    double fail_p50_ms, fail_p99_ms, fail_max_ms; /* failed requests during the outage */
    double fail_max_before_down_ms;               /* slowest failure before the pool went DOWN */
    double longest_ms;                            /* longest request of the whole drill */
    int recovered;
} drill_report;

/* Write the report as a self-contained HTML page (inline SVG, no scripts). */
void drill_write_html(FILE *f, const drill_report *r);
/* Write the report as one standalone SVG image (summary text + charts). */
void drill_write_svg(FILE *f, const drill_report *r);

#endif
