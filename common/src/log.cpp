#include "ckptd/log.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <string>

namespace ckptd::log {
namespace {

std::atomic<int> threshold{static_cast<int>(level::info)};

// journald sets JOURNAL_STREAM to "device:inode" of the stream it gave us;
// only when stderr is that very stream (not redirected by someone in
// between) do priority prefixes make sense.
bool stderr_is_journal() {
  const char* stream = std::getenv("JOURNAL_STREAM");
  unsigned long long device = 0, inode = 0;
  if (stream == nullptr || std::sscanf(stream, "%llu:%llu", &device, &inode) != 2) return false;
  struct stat st {};
  return ::fstat(STDERR_FILENO, &st) == 0 && st.st_dev == device && st.st_ino == inode;
}

std::atomic<bool> journal{stderr_is_journal()};

// Repeated warnings about the same cause (an unreadable folder rescanned every
// few seconds) must not flood the journal: the same text is written at most
// once per window, and the next line after the window says how many were held
// back. A small table of recent texts by hash; a collision merely lets a line
// through.
constexpr auto repeat_window = std::chrono::seconds(60);
constexpr std::size_t repeat_slots = 256;

struct recent_line {
  std::size_t hash = 0;
  std::chrono::steady_clock::time_point last{};
  std::size_t suppressed = 0;
};

std::mutex recent_mutex;
std::array<recent_line, repeat_slots> recent;

// Whether to write `message` now; `suppressed` is set to the number of copies
// held back since it was last written.
bool admit(std::string_view message, std::size_t& suppressed) {
  const auto hash = std::hash<std::string_view>{}(message);
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(recent_mutex);
  auto& slot = recent[hash % repeat_slots];
  if (slot.hash == hash && now - slot.last < repeat_window) {
    ++slot.suppressed;
    return false;
  }
  suppressed = slot.hash == hash ? slot.suppressed : 0;
  slot = recent_line{hash, now, 0};
  return true;
}

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

void detect_journal() { journal = stderr_is_journal(); }

void write(level l, std::string_view message) {
  std::size_t suppressed = 0;
  if (l <= level::warning && !admit(message, suppressed)) return;
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
  if (suppressed > 0) out += " (" + std::to_string(suppressed) + " more like it held back)";
  out += '\n';
  // A short write to stderr is not worth a retry loop; the line is best effort.
  [[maybe_unused]] auto written = ::write(STDERR_FILENO, out.data(), out.size());
}

}  // namespace ckptd::log
