// tui/meter.c — number formatting (sizes, counts, rates, savings) and meter cell arithmetic.
#include "tui/meter.h"

#include <math.h>
#include <stdio.h>

void tui_fmt_bytes(uint64_t bytes, char *out, size_t cap) {
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    if (bytes < 1000) {
        snprintf(out, cap, "%u B", (unsigned)bytes);
        return;
    }
    double v = (double)bytes;
    int u = 0;
    while (u < 5 && v >= 999.5)
        v /= 1024.0, u++;
    // Pick the precision from the value after rounding so 9.999 prints "10.0", not "10.00".
    if (v < 9.995)
        snprintf(out, cap, "%.2f %s", v, units[u]);
    else if (v < 99.95)
        snprintf(out, cap, "%.1f %s", v, units[u]);
    else
        snprintf(out, cap, "%.0f %s", v, units[u]);
}

void tui_fmt_int(int64_t v, char *out, size_t cap) {
    char digits[32], tmp[48];
    uint64_t m = v < 0 ? (uint64_t)(-(v + 1)) + 1 : (uint64_t)v;
    int nd = snprintf(digits, sizeof digits, "%llu", (unsigned long long)m);
    int k = 0;
    if (v < 0) tmp[k++] = '-';
    for (int i = 0; i < nd; i++) {
        if (i > 0 && (nd - i) % 3 == 0) tmp[k++] = ',';
        tmp[k++] = digits[i];
    }
    tmp[k] = 0;
    snprintf(out, cap, "%s", tmp);
}

void tui_fmt_rate(double tok_s, char *out, size_t cap) {
    if (!(tok_s > 0) || !isfinite(tok_s))
        snprintf(out, cap, "-");
    else if (tok_s < 9.995)
        snprintf(out, cap, "%.2f", tok_s);
    else if (tok_s < 999.95)
        snprintf(out, cap, "%.1f", tok_s);
    else
        snprintf(out, cap, "%.0f", tok_s);
}

void tui_fmt_saving(uint64_t used, uint64_t full, char *out, size_t cap) {
    if (full == 0) {
        snprintf(out, cap, "-");
        return;
    }
    double pct = 100.0 * (1.0 - (double)used / (double)full);
    if (used == 0) {
        snprintf(out, cap, "-%.1f%%", pct);
        return;
    }
    double times = (double)full / (double)used;
    snprintf(out, cap, "%s%.1f%% (%.2fx)", pct >= 0 ? "-" : "+", fabs(pct), times);
}

void tui_meter_cells(double frac, int width, int *full, int *eighths) {
    if (width < 0) width = 0;
    if (!(frac > 0)) frac = 0; // also catches NaN
    if (frac > 1) frac = 1;
    int total = (int)lround(frac * width * 8.0);
    *full = total / 8;
    *eighths = total % 8;
    if (*full >= width) *full = width, *eighths = 0;
}
