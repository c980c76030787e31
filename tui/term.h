// tui/term.h — the one include of ncurses (wide-character API). TUI_HAVE_CURSES is 1 when its headers were
// found; without them (a build box with only the runtime library) the TUI compiles to stubs and the chat
// falls back to line mode, so the rest of the program still builds.
#pragma once

#if defined(__has_include)
#if __has_include(<ncursesw/curses.h>)
#ifndef NCURSES_WIDECHAR
#define NCURSES_WIDECHAR 1
#endif
#include <ncursesw/curses.h>
#define TUI_HAVE_CURSES 1
#elif __has_include(<curses.h>)
#ifndef _XOPEN_SOURCE_EXTENDED
#define _XOPEN_SOURCE_EXTENDED 1
#endif
#ifndef NCURSES_WIDECHAR
#define NCURSES_WIDECHAR 1
#endif
#include <curses.h>
#define TUI_HAVE_CURSES 1
#endif
#else // no __has_include: assume the usual layout
#ifndef NCURSES_WIDECHAR
#define NCURSES_WIDECHAR 1
#endif
#include <ncursesw/curses.h>
#define TUI_HAVE_CURSES 1
#endif

#ifndef TUI_HAVE_CURSES
#define TUI_HAVE_CURSES 0
typedef unsigned long attr_t; // only so the drawing code's declarations compile
#define A_BOLD 0ul
#define A_DIM 0ul
#define A_REVERSE 0ul
#define A_UNDERLINE 0ul
#endif
