#pragma once
// ckptd::metrics — the process's counters, gauges and histograms, and their
// Prometheus text exposition (format 0.0.4).
//
// Each metric is a global with a fixed name, help text and (for histograms) a
// fixed bucket set, so updating one is a single relaxed atomic operation and
// nothing is allocated or registered at run time. The watcher and the daemon
// update the ones they own; the api renders them all on GET /metrics.
//
//   ckptd::metrics::ingest_latency.observe(seconds);
//   ckptd::metrics::rescans.inc();
//   ckptd::metrics::index_healthy.set(0);
//
// Thread-safety: every member function may be called from any thread. A
// rendering taken while others update is not one atomic snapshot (a
// histogram's count may run one observation ahead of its buckets), which
// Prometheus tolerates.

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace ckptd::metrics {

class counter {
 public:
  constexpr counter(std::string_view name, std::string_view help) noexcept
      : name_(name), help_(help) {}
  counter(const counter&) = delete;
  counter& operator=(const counter&) = delete;

  void inc(std::uint64_t n = 1) noexcept { value_.fetch_add(n, std::memory_order_relaxed); }
  [[nodiscard]] std::uint64_t value() const noexcept {
    return value_.load(std::memory_order_relaxed);
  }
  [[nodiscard]] std::string_view name() const noexcept { return name_; }
  [[nodiscard]] std::string_view help() const noexcept { return help_; }

 private:
  std::string_view name_;
  std::string_view help_;
  std::atomic<std::uint64_t> value_{0};
};

class gauge {
 public:
  constexpr gauge(std::string_view name, std::string_view help, double initial = 0) noexcept
      : name_(name), help_(help), value_(initial) {}
  gauge(const gauge&) = delete;
  gauge& operator=(const gauge&) = delete;

  void set(double v) noexcept { value_.store(v, std::memory_order_relaxed); }
  void inc(double by = 1) noexcept { value_.fetch_add(by, std::memory_order_relaxed); }
  void dec(double by = 1) noexcept { value_.fetch_sub(by, std::memory_order_relaxed); }
  [[nodiscard]] double value() const noexcept { return value_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::string_view name() const noexcept { return name_; }
  [[nodiscard]] std::string_view help() const noexcept { return help_; }

 private:
  std::string_view name_;
  std::string_view help_;
  std::atomic<double> value_;
};

class histogram {
 public:
  // Most finite bucket bounds a histogram may have.
  static constexpr std::size_t max_buckets = 20;

  // `upper_bounds`: ascending, finite, at most max_buckets of them, with
  // static storage; the +Inf bucket is implied.
  constexpr histogram(std::string_view name, std::string_view help,
                      std::span<const double> upper_bounds) noexcept
      : name_(name),
        help_(help),
        bounds_(upper_bounds.first(upper_bounds.size() < max_buckets ? upper_bounds.size()
                                                                     : max_buckets)) {}
  histogram(const histogram&) = delete;
  histogram& operator=(const histogram&) = delete;

  // Counts `value` in the first bucket whose bound is >= value (NaN is ignored).
  void observe(double value) noexcept;

  struct snapshot {
    std::array<std::uint64_t, max_buckets + 1> cumulative{};  // per bound, then +Inf
    std::uint64_t count = 0;
    double sum = 0;
  };
  [[nodiscard]] snapshot read() const noexcept;
  [[nodiscard]] std::span<const double> upper_bounds() const noexcept { return bounds_; }
  [[nodiscard]] std::string_view name() const noexcept { return name_; }
  [[nodiscard]] std::string_view help() const noexcept { return help_; }

 private:
  std::string_view name_;
  std::string_view help_;
  std::span<const double> bounds_;
  std::array<std::atomic<std::uint64_t>, max_buckets + 1> counts_{};  // not cumulative
  std::atomic<double> sum_{0};
};

// ---- what the watcher and the daemon update --------------------------------

// ckptd_ingest_latency_seconds: from a checkpoint's completion being seen (its
// marker file closed or renamed into place) to its record being in the index.
extern histogram ingest_latency;
// ckptd_inotify_watches: inotify watches currently held.
extern gauge watches;
// ckptd_rescans_total: full rescans of a watched folder (queue overflow,
// periodic rescan of unwatchable folders, polling passes excluded).
extern counter rescans;
// ckptd_index_write_failures_total: index writes that failed (full volume,
// I/O error).
extern counter index_write_failures;
// ckptd_index_healthy: 1 while index writes succeed, 0 from a failed write
// until one succeeds again. Starts at 1.
extern gauge index_healthy;
// ckptd_index_changes_held_back_total: job changes not attempted, or not
// written, while the index could not be written; each such job is written
// once writes work again.
extern counter index_changes_held_back;
// ckptd_unreadable_folders: watched folders whose listing currently fails
// with an error other than "does not exist" (EACCES, EIO, ...). What was
// indexed under them is kept, unchanged, until they can be read again.
extern gauge unreadable_folders;
// ckptd_checkpoints_indexed: checkpoints currently in the index, all jobs.
extern gauge checkpoints_indexed;
// ckptd_jobs_indexed: jobs currently in the index.
extern gauge jobs_indexed;

// ---- what the api updates ---------------------------------------------------

// ckptd_http_request_duration_seconds: from a request's header being read to
// its response being written (a long-poll's wait included; event streams
// are not counted).
extern histogram http_request_duration;
// ckptd_http_rate_limited_total: requests refused with 429.
extern counter http_rate_limited;
// ckptd_http_open_connections: HTTP connections currently open.
extern gauge http_open_connections;
// ckptd_http_long_poll_waiters: requests currently held by "Prefer: wait".
extern gauge long_poll_waiters;
// ckptd_events_subscribers: Server-Sent Events streams currently open.
extern gauge event_subscribers;
// ckptd_http_body_cache_bytes: bytes of job bodies (gzip encodings included)
// the API keeps in memory, within its body cache budget.
extern gauge body_cache_bytes;
// ckptd_http_body_loads_total: reads of a job from the index to rebuild
// bodies evicted from memory (one per job, however many requests wait on it).
extern counter body_loads;
// ckptd_http_body_load_waiters: requests currently waiting for such a read.
extern gauge body_load_waiters;

// ---- exposition ---------------------------------------------------------------

// The value of ckptd_build_info's version label. Default: the project version.
[[nodiscard]] std::string_view version() noexcept;

// Appends "# HELP" and "# TYPE" lines; `help` is escaped as the format wants.
void append_header(std::string& out, std::string_view name, std::string_view help,
                   std::string_view type);
// Appends one sample line; `labels` is either empty or already rendered as
// `name="value",...` (see append_label).
void append_sample(std::string& out, std::string_view name, std::string_view labels, double value);
// Appends `name="value"` (with a leading comma when `labels` is not empty),
// escaping the value.
void append_label(std::string& labels, std::string_view name, std::string_view value);

// Appends every metric above, and ckptd_build_info, in the text format.
void render(std::string& out);

}  // namespace ckptd::metrics
