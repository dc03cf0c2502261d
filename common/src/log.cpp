#include "ckptd/log.hpp"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <string>

namespace ckptd::log {
namespace {

std::atomic<int> threshold{static_cast<int>(level::info)};

// journald sets JOURNAL_STREAM to "device:inode" of the stream it gave us;
// only when stderr is that very stream do priority prefixes make sense.
bool stderr_is_journal() {
  const char* stream = std::getenv("JOURNAL_STREAM");
  return stream != nullptr && *stream != '\0';
}

const bool journal = stderr_is_journal();

std::string_view word(level l) {
  switch (l) {
    case level::error:
      return "error";
    case level::warning:
      return "warning";
    case level::notice:
      return "notice";
    case level::info:
      return "info";
    case level::debug:
      return "debug";
  }
  return "?";
}

}  // namespace

void set_threshold(level l) { threshold.store(static_cast<int>(l), std::memory_order_relaxed); }

bool enabled(level l) { return static_cast<int>(l) <= threshold.load(std::memory_order_relaxed); }

bool parse_level(std::string_view text, level& out) {
  for (level l : {level::error, level::warning, level::notice, level::info, level::debug}) {
    if (text == word(l)) {
      out = l;
      return true;
    }
  }
  return false;
}

void write(level l, std::string_view message) {
  std::string out;
  out.reserve(message.size() + 16);
  if (journal) {
    out += '<';
    out += static_cast<char>('0' + static_cast<int>(l));
    out += '>';
  } else {
    out += "ckptd ";
    out += word(l);
    out += ": ";
  }
  // One event, one line: embedded newlines (from file names, say) would forge lines.
  for (char c : message) out += (c == '\n' || c == '\r') ? ' ' : c;
  out += '\n';
  // A short write to stderr is not worth a retry loop; the line is best effort.
  [[maybe_unused]] auto written = ::write(STDERR_FILENO, out.data(), out.size());
}

}  // namespace ckptd::log
