#include "rate_limiter.hpp"

#include <algorithm>
#include <cmath>

namespace ckptd::api {
namespace {

// Keeps capacity * anything we add far from overflow: about 3.6 years of credit.
constexpr double max_capacity_ns = static_cast<double>(std::int64_t{1} << 56);

// Buckets looked at, per take, at the cold end for having refilled to full.
constexpr int sweep_per_take = 2;

}  // namespace

rate_limiter::rate_limiter(refill_policy policy, std::size_t max_keys)
    : max_keys_(std::max<std::size_t>(max_keys, 1)) {
  set_policy(policy);
}

void rate_limiter::reconfigure(refill_policy policy, std::size_t max_keys) {
  const std::int64_t old_capacity = capacity_ns_;
  set_policy(policy);
  max_keys_ = std::max<std::size_t>(max_keys, 1);
  if (!enabled()) {
    index_.clear();
    lru_.clear();
    return;
  }
  while (index_.size() > max_keys_) {
    index_.erase(lru_.back().key);
    lru_.pop_back();
  }
  if (old_capacity == capacity_ns_ || old_capacity == 0) return;
  const double scale = static_cast<double>(capacity_ns_) / static_cast<double>(old_capacity);
  for (bucket& b : lru_) {
    const double credit = static_cast<double>(b.credit_ns) * scale;
    b.credit_ns = std::clamp<std::int64_t>(std::llround(credit), 0, capacity_ns_);
  }
}

void rate_limiter::set_policy(refill_policy policy) {
  period_ns_ = 0;
  capacity_ns_ = 0;
  if (!(policy.rate_per_second > 0) || !std::isfinite(policy.rate_per_second)) return;
  const double burst = std::isfinite(policy.burst) ? std::max(policy.burst, 1.0) : 1.0;
  const double period = std::min(1e9 / policy.rate_per_second, max_capacity_ns);
  period_ns_ = std::max<std::int64_t>(std::llround(period), 1);
  capacity_ns_ = std::llround(std::min(static_cast<double>(period_ns_) * burst, max_capacity_ns));
  capacity_ns_ = std::max(capacity_ns_, period_ns_);
}

std::int64_t rate_limiter::credit_at(const bucket& b, clock::time_point now) const {
  // A clock that seems to step back adds nothing rather than taking credit away.
  const std::int64_t elapsed =
      std::max<std::int64_t>(std::chrono::nanoseconds(now - b.updated).count(), 0);
  if (elapsed >= capacity_ns_ - b.credit_ns) return capacity_ns_;
  return b.credit_ns + elapsed;
}

rate_limiter::verdict rate_limiter::take(std::string_view key, clock::time_point now) {
  if (!enabled()) return {};

  for (int i = 0; i < sweep_per_take && !lru_.empty(); ++i) {
    const bucket& cold = lru_.back();
    if (cold.key == key || credit_at(cold, now) < capacity_ns_) break;
    index_.erase(cold.key);
    lru_.pop_back();
  }

  auto found = index_.find(key);
  if (found == index_.end()) {
    if (index_.size() >= max_keys_) {
      index_.erase(lru_.back().key);
      lru_.pop_back();
    }
    lru_.push_front(bucket{std::string(key), capacity_ns_, now});
    found = index_.emplace(lru_.front().key, lru_.begin()).first;
  } else {
    lru_.splice(lru_.begin(), lru_, found->second);
  }

  bucket& b = *found->second;
  b.credit_ns = credit_at(b, now);
  b.updated = now;
  if (b.credit_ns >= period_ns_) {
    b.credit_ns -= period_ns_;
    return {};
  }
  return {false, std::chrono::nanoseconds(period_ns_ - b.credit_ns)};
}

std::int64_t retry_after_seconds(std::chrono::nanoseconds wait) {
  const std::int64_t ns = wait.count();
  return std::max<std::int64_t>((ns + 999'999'999) / 1'000'000'000, 1);
}

std::int64_t retry_after_milliseconds(std::chrono::nanoseconds wait) {
  const std::int64_t ns = wait.count();
  return std::max<std::int64_t>((ns + 999'999) / 1'000'000, 1);
}

}  // namespace ckptd::api
