// tui/meter.h — number formatting and meter arithmetic for the dashboard (pure: no terminal needed).
#pragma once
#include <stddef.h>
#include <stdint.h>

// Binary size with three significant digits: "0 B", "999 B", "1.00 KiB", "12.3 MiB", "512 GiB". A value
// that would print as 1000 or more of a unit moves to the next unit ("0.98 MiB", never "1000 KiB").
void tui_fmt_bytes(uint64_t bytes, char *out, size_t cap);
// Integer with thousands separators: "1,234,567", "-12".
void tui_fmt_int(int64_t v, char *out, size_t cap);
// Tokens per second: "-" when unknown (<= 0), "0.42", "12.3", "1234".
void tui_fmt_rate(double tok_s, char *out, size_t cap);
// The saving of `used` against `full`: "-74.4% (3.90x)"; "-" when full is 0; "+12.0% (0.89x)" when the
// cache holds more than the baseline (metadata on tiny contexts).
void tui_fmt_saving(uint64_t used, uint64_t full, char *out, size_t cap);

// Splits a fraction (clamped to [0, 1]) of a `width`-cell meter into whole cells and eighths of one more
// cell (0..7): full + (eighths > 0) <= width.
void tui_meter_cells(double frac, int width, int *full, int *eighths);
