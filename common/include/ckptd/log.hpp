#pragma once
// ckptd::log — one line per event on stderr.
//
// Lines carry a syslog priority prefix ("<4>") when stderr is connected to the
// journal (JOURNAL_STREAM names its device and inode), so journald files them
// at the right level;
// otherwise they are plain text with a level word. Thread-safe: each line goes
// out in a single write(2), so lines from different threads never interleave.
//
// Usage: log::warning("cannot read ", path, ": ", ec.message());
// Arguments are streamed (operator<<) only when the level is enabled.

#include <sstream>
#include <string_view>

namespace ckptd::log {

enum class level { error = 3, warning = 4, notice = 5, info = 6, debug = 7 };

// Lines less severe than this are dropped. Default: info.
void set_threshold(level l);
[[nodiscard]] bool enabled(level l);

// Parses "error", "warning", "notice", "info", "debug". Returns false otherwise.
[[nodiscard]] bool parse_level(std::string_view text, level& out);

// Writes one line. Errors and warnings repeating the same text within a
// minute are held back and counted, so one bad folder cannot flood the log.
void write(level l, std::string_view message);

// Checks again whether stderr is the journal (JOURNAL_STREAM matches its
// device and inode). Done once at start; for tests that redirect stderr.
void detect_journal();

template <typename... Args>
void line(level l, const Args&... args) {
  if (!enabled(l)) return;
  std::ostringstream out;
  (out << ... << args);
  write(l, out.view());
}

template <typename... Args>
void error(const Args&... args) {
  line(level::error, args...);
}
template <typename... Args>
void warning(const Args&... args) {
  line(level::warning, args...);
}
template <typename... Args>
void notice(const Args&... args) {
  line(level::notice, args...);
}
template <typename... Args>
void info(const Args&... args) {
  line(level::info, args...);
}
template <typename... Args>
void debug(const Args&... args) {
  line(level::debug, args...);
}

}  // namespace ckptd::log
