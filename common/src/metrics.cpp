#include <ckptd/metrics.hpp>

#include <charconv>
#include <cmath>

#ifndef CKPTD_VERSION
#define CKPTD_VERSION "unknown"
#endif

namespace ckptd::metrics {
namespace {

// Seconds. A checkpoint is indexed within milliseconds of its completion
// unless a settle time or a polling interval stands between; the upper
// buckets show those.
constexpr std::array<double, 14> ingest_bounds{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                               0.25,  0.5,    1,     2.5,  5,     10,   30};
// Seconds. Answers from memory take microseconds; long-polls take up to
// their wait.
constexpr std::array<double, 16> request_bounds{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                                1,      5,       30,     300};

void append_value(std::string& out, double value) {
  if (std::isnan(value)) {
    out += "NaN";
  } else if (std::isinf(value)) {
    out += value > 0 ? "+Inf" : "-Inf";
  } else {
    char text[32];
    const auto [end, ec] = std::to_chars(text, text + sizeof text, value);
    out.append(text, ec == std::errc() ? static_cast<std::size_t>(end - text) : 0);
  }
}

void render_counter(std::string& out, const counter& c) {
  append_header(out, c.name(), c.help(), "counter");
  append_sample(out, c.name(), {}, static_cast<double>(c.value()));
}

void render_gauge(std::string& out, const gauge& g) {
  append_header(out, g.name(), g.help(), "gauge");
  append_sample(out, g.name(), {}, g.value());
}

void render_histogram(std::string& out, const histogram& h) {
  append_header(out, h.name(), h.help(), "histogram");
  const histogram::snapshot s = h.read();
  const std::string bucket = std::string(h.name()) + "_bucket";
  const auto bounds = h.upper_bounds();
  for (std::size_t i = 0; i <= bounds.size(); ++i) {
    std::string le;
    std::string bound;
    if (i < bounds.size()) {
      append_value(bound, bounds[i]);
    } else {
      bound = "+Inf";
    }
    append_label(le, "le", bound);
    append_sample(out, bucket, le, static_cast<double>(s.cumulative[i]));
  }
  append_sample(out, std::string(h.name()) + "_sum", {}, s.sum);
  append_sample(out, std::string(h.name()) + "_count", {}, static_cast<double>(s.count));
}

}  // namespace

histogram ingest_latency{"ckptd_ingest_latency_seconds",
                         "Time from a checkpoint's completion being seen to its being indexed.",
                         ingest_bounds};
gauge watches{"ckptd_inotify_watches", "inotify watches currently held."};
counter rescans{"ckptd_rescans_total", "Full rescans of watched folders."};
counter index_write_failures{"ckptd_index_write_failures_total", "Index writes that failed."};
gauge index_healthy{"ckptd_index_healthy",
                    "1 while index writes succeed, 0 after a failed write until one succeeds.", 1};
counter index_changes_held_back{
    "ckptd_index_changes_held_back_total",
    "Job changes held back while the index could not be written; written once it can."};
gauge unreadable_folders{"ckptd_unreadable_folders",
                         "Watched folders that cannot be read (not missing: EACCES, EIO); what "
                         "was indexed under them is kept."};
gauge checkpoints_indexed{"ckptd_checkpoints_indexed", "Checkpoints in the index, all jobs."};
gauge jobs_indexed{"ckptd_jobs_indexed", "Jobs in the index."};

histogram http_request_duration{"ckptd_http_request_duration_seconds",
                                "Time from a request's header being read to its response being "
                                "written, long-poll waits included.",
                                request_bounds};
counter http_rate_limited{"ckptd_http_rate_limited_total", "Requests refused with 429."};
gauge http_open_connections{"ckptd_http_open_connections", "HTTP connections currently open."};
gauge long_poll_waiters{"ckptd_http_long_poll_waiters",
                        "Requests currently held by a \"Prefer: wait\" long-poll."};
gauge event_subscribers{"ckptd_events_subscribers", "Server-Sent Events streams currently open."};
gauge body_cache_bytes{"ckptd_http_body_cache_bytes",
                       "Bytes of job bodies (gzip encodings included) kept in memory."};
counter body_loads{"ckptd_http_body_loads_total",
                   "Reads of a job from the index to rebuild bodies evicted from memory."};
gauge body_load_waiters{"ckptd_http_body_load_waiters",
                        "Requests waiting for a job's evicted bodies to be read back."};

void histogram::observe(double value) noexcept {
  if (std::isnan(value)) return;
  std::size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
}

histogram::snapshot histogram::read() const noexcept {
  snapshot s;
  std::uint64_t running = 0;
  for (std::size_t i = 0; i <= bounds_.size(); ++i) {
    running += counts_[i].load(std::memory_order_relaxed);
    s.cumulative[i] = running;
  }
  s.count = running;
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

std::string_view version() noexcept { return CKPTD_VERSION; }

void append_header(std::string& out, std::string_view name, std::string_view help,
                   std::string_view type) {
  out += "# HELP ";
  out += name;
  out += ' ';
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

void append_sample(std::string& out, std::string_view name, std::string_view labels, double value) {
  out += name;
  if (!labels.empty()) {
    out += '{';
    out += labels;
    out += '}';
  }
  out += ' ';
  append_value(out, value);
  out += '\n';
}

void append_label(std::string& labels, std::string_view name, std::string_view value) {
  if (!labels.empty()) labels += ',';
  labels += name;
  labels += "=\"";
  for (char c : value) {
    if (c == '\\') {
      labels += "\\\\";
    } else if (c == '"') {
      labels += "\\\"";
    } else if (c == '\n') {
      labels += "\\n";
    } else {
      labels += c;
    }
  }
  labels += '"';
}

void render(std::string& out) {
  render_histogram(out, http_request_duration);
  render_counter(out, http_rate_limited);
  render_gauge(out, http_open_connections);
  render_gauge(out, long_poll_waiters);
  render_gauge(out, event_subscribers);
  render_gauge(out, body_cache_bytes);
  render_counter(out, body_loads);
  render_gauge(out, body_load_waiters);
  render_gauge(out, checkpoints_indexed);
  render_gauge(out, jobs_indexed);
  render_histogram(out, ingest_latency);
  render_gauge(out, watches);
  render_counter(out, rescans);
  render_counter(out, index_write_failures);
  render_gauge(out, index_healthy);
  render_counter(out, index_changes_held_back);
  render_gauge(out, unreadable_folders);
  append_header(out, "ckptd_build_info", "Build information; the value is always 1.", "gauge");
  std::string labels;
  append_label(labels, "version", version());
  append_sample(out, "ckptd_build_info", labels, 1);
}

}  // namespace ckptd::metrics
