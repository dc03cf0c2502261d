#pragma once
// Per-client token buckets, driven by an explicit clock.
//
// Each key (a client address) has a bucket holding up to `burst` tokens that
// refills at `rate_per_second`; a request takes one token or is told how long
// until one is there. Time is an argument, never read here, so tests step it.
//
// The table is bounded: a bucket that has refilled to full is the same as no
// bucket, so such buckets are dropped as they are met at the cold end of a
// least-recently-used list, and when the table is at its bound the least
// recently used bucket gives way to a new key. A flood of source addresses
// therefore costs a fixed amount of memory (at worst it lets a throttled
// client start afresh, which that many addresses could do anyway).
//
// Thread-safety: none; the server keeps it on the io_context's thread.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <list>
#include <string>
#include <string_view>
#include <unordered_map>

namespace ckptd::api {

struct refill_policy {
  // Tokens added per second. 0 (or less) disables limiting. Default: 20.
  double rate_per_second = 20;
  // Most tokens a bucket holds, i.e. requests allowed at once. Values below 1
  // count as 1. Default: 40.
  double burst = 40;
};

class rate_limiter {
 public:
  using clock = std::chrono::steady_clock;

  struct verdict {
    bool allowed = true;
    // When refused: time until the bucket holds a whole token again.
    std::chrono::nanoseconds wait{0};
  };

  rate_limiter(refill_policy policy, std::size_t max_keys);

  // Applies a new policy and bound to the buckets already tracked: each keeps
  // the share of a full bucket it held (a throttled client stays throttled,
  // an idle one stays full), and the least recently used give way when the
  // bound shrinks. Disabling drops every bucket.
  void reconfigure(refill_policy policy, std::size_t max_keys);

  // Takes a token from `key`'s bucket at time `now`. A new key starts full.
  [[nodiscard]] verdict take(std::string_view key, clock::time_point now);

  [[nodiscard]] bool enabled() const { return period_ns_ > 0; }
  // Buckets currently tracked; never above max_keys.
  [[nodiscard]] std::size_t size() const { return index_.size(); }

 private:
  // Tokens are kept as nanoseconds of credit: one token is `period_ns_` of
  // credit and each nanosecond that passes adds one. Integer arithmetic keeps
  // the Retry-After of exact rates (2.5 s at 0.4/s) exact.
  struct bucket {
    std::string key;
    std::int64_t credit_ns = 0;
    clock::time_point updated;
  };
  using lru_list = std::list<bucket>;

  [[nodiscard]] std::int64_t credit_at(const bucket& b, clock::time_point now) const;
  void set_policy(refill_policy policy);

  std::int64_t period_ns_ = 0;    // credit one token costs; 0 when disabled
  std::int64_t capacity_ns_ = 0;  // credit of a full bucket
  std::size_t max_keys_;
  lru_list lru_;                                                    // most recently used first
  std::unordered_map<std::string_view, lru_list::iterator> index_;  // views into lru_ keys
};

// Whole seconds for a Retry-After header: the wait rounded up, at least 1.
[[nodiscard]] std::int64_t retry_after_seconds(std::chrono::nanoseconds wait);
// Milliseconds for a retry-after-ms header: the wait rounded up, at least 1.
[[nodiscard]] std::int64_t retry_after_milliseconds(std::chrono::nanoseconds wait);

}  // namespace ckptd::api
