#!/usr/bin/env bash
# plot.sh ADAPTIVE.csv FIXED.csv MAX_CONNECTIONS TITLE > out.svg
# Three panels from two `sim --series` files (adaptive budget vs fixed
# per-process caps): backends and the sum of the caps, 53300 refusals per
# second, requests served per second. Plain awk writing SVG polylines: no
# plotting package needed.
set -euo pipefail
[ $# -eq 4 ] || { echo "usage: $0 ADAPTIVE.csv FIXED.csv MAX_CONNECTIONS TITLE" >&2; exit 2; }
awk -F, -v M="$3" -v title="$4" '
FNR == 1 { file++; next }
{
    t = $1 + 0; n[file]++; T[file, n[file]] = t
    B[file, n[file]] = $2; C[file, n[file]] = $3; R[file, n[file]] = $6; O[file, n[file]] = $8
    if (t > tmax) tmax = t
    if ($6 + 0 > rmax) rmax = $6 + 0
    if ($8 + 0 > omax) omax = $8 + 0
}
function x(t) { return 70 + (t / tmax) * 700 }
function y(v, top, h, vmax) { if (v > vmax) v = vmax; return top + h - (v / vmax) * h }
function line(f, arr, top, h, vmax, color, dash,    i, pts) {
    pts = ""
    for (i = 1; i <= n[f]; i++) {
        v = (arr == "B") ? B[f, i] : (arr == "C") ? C[f, i] : (arr == "R") ? R[f, i] : O[f, i]
        pts = pts sprintf("%.1f,%.1f ", x(T[f, i]), y(v, top, h, vmax))
    }
    printf "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\"%s points=\"%s\"/>\n", color, dash ? " stroke-dasharray=\"5,3\"" : "", pts
}
function axes(top, h, vmax, label,    k, v) {
    printf "<rect x=\"70\" y=\"%d\" width=\"700\" height=\"%d\" fill=\"none\" stroke=\"#999\"/>\n", top, h
    for (k = 0; k <= 4; k++) {
        v = vmax * k / 4
        printf "<text x=\"64\" y=\"%.1f\" text-anchor=\"end\" font-size=\"10\">%g</text>\n", y(v, top, h, vmax) + 3, int(v + 0.5)
    }
    printf "<text x=\"74\" y=\"%d\" font-size=\"11\" font-weight=\"bold\">%s</text>\n", top + 12, label
}
END {
    if (rmax < 1) rmax = 1
    cmax = 2 * M
    print "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"800\" height=\"700\" font-family=\"sans-serif\">"
    print "<rect width=\"800\" height=\"700\" fill=\"white\"/>"
    printf "<text x=\"400\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">%s</text>\n", title
    axes(40, 180, cmax, "backends (solid), sum of the caps (dashed), max_connections (grey)")
    printf "<line x1=\"70\" x2=\"770\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#888\" stroke-dasharray=\"2,2\"/>\n", y(M, 40, 180, cmax), y(M, 40, 180, cmax)
    line(1, "B", 40, 180, cmax, "#1f77b4", 0); line(1, "C", 40, 180, cmax, "#1f77b4", 1)
    line(2, "B", 40, 180, cmax, "#ff7f0e", 0); line(2, "C", 40, 180, cmax, "#ff7f0e", 1)
    axes(250, 180, rmax, "connects refused with 53300, per second")
    line(1, "R", 250, 180, rmax, "#1f77b4", 0); line(2, "R", 250, 180, rmax, "#ff7f0e", 0)
    axes(460, 180, omax, "requests served per second")
    line(1, "O", 460, 180, omax, "#1f77b4", 0); line(2, "O", 460, 180, omax, "#ff7f0e", 0)
    for (k = 0; k <= 5; k++)
        printf "<text x=\"%.1f\" y=\"655\" text-anchor=\"middle\" font-size=\"10\">%d s</text>\n", x(tmax * k / 5), int(tmax * k / 5)
    print "<rect x=\"250\" y=\"670\" width=\"12\" height=\"4\" fill=\"#1f77b4\"/><text x=\"266\" y=\"676\" font-size=\"11\">adaptive budget</text>"
    print "<rect x=\"420\" y=\"670\" width=\"12\" height=\"4\" fill=\"#ff7f0e\"/><text x=\"436\" y=\"676\" font-size=\"11\">fixed per-process caps</text>"
    print "</svg>"
}' "$1" "$2"
