#include "artifacts_json.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <tuple>

namespace ckptd::api {
namespace {

constexpr std::string_view replacement_character = "\xEF\xBF\xBD";  // U+FFFD

// How many bytes the sequence starting with `lead` has, and the range its
// second byte must fall in (the later ones are always 80..BF). Zero length
// means the byte cannot start a sequence.
struct lead_info {
  int length;
  unsigned char second_lo;
  unsigned char second_hi;
};

lead_info classify(unsigned char lead) {
  if (lead < 0x80) return {1, 0, 0};
  if (lead >= 0xC2 && lead <= 0xDF) return {2, 0x80, 0xBF};
  if (lead == 0xE0) return {3, 0xA0, 0xBF};  // no overlongs
  if (lead == 0xED) return {3, 0x80, 0x9F};  // no surrogates
  if (lead >= 0xE1 && lead <= 0xEF) return {3, 0x80, 0xBF};
  if (lead == 0xF0) return {4, 0x90, 0xBF};  // no overlongs
  if (lead >= 0xF1 && lead <= 0xF3) return {4, 0x80, 0xBF};
  if (lead == 0xF4) return {4, 0x80, 0x8F};  // nothing past U+10FFFF
  return {0, 0, 0};
}

// Length of the well-formed sequence at `i`, or 0 with `consumed` set to the
// length of the maximal ill-formed subpart (at least 1).
std::size_t well_formed_length(std::string_view text, std::size_t i, std::size_t& consumed) {
  const auto lead = static_cast<unsigned char>(text[i]);
  const lead_info info = classify(lead);
  if (info.length == 0) {
    consumed = 1;
    return 0;
  }
  for (int k = 1; k < info.length; ++k) {
    const std::size_t at = i + static_cast<std::size_t>(k);
    if (at >= text.size()) {
      consumed = static_cast<std::size_t>(k);
      return 0;
    }
    const auto byte = static_cast<unsigned char>(text[at]);
    const unsigned char lo = k == 1 ? info.second_lo : 0x80;
    const unsigned char hi = k == 1 ? info.second_hi : 0xBF;
    if (byte < lo || byte > hi) {
      consumed = static_cast<std::size_t>(k);
      return 0;
    }
  }
  return static_cast<std::size_t>(info.length);
}

bool is_valid_utf8(std::string_view text) {
  for (std::size_t i = 0; i < text.size();) {
    std::size_t consumed = 0;
    const std::size_t n = well_formed_length(text, i, consumed);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

boost::json::string json_string(std::string_view text) {
  return boost::json::string(to_valid_utf8(text));
}

bool finite(const store::training_metrics& m) {
  return std::isfinite(m.train_loss) && std::isfinite(m.validation_loss) &&
         std::isfinite(m.perplexity);
}

}  // namespace

std::string to_valid_utf8(std::string_view text) {
  if (is_valid_utf8(text)) return std::string(text);
  std::string out;
  out.reserve(text.size() + 8);
  for (std::size_t i = 0; i < text.size();) {
    std::size_t consumed = 0;
    const std::size_t n = well_formed_length(text, i, consumed);
    if (n != 0) {
      out.append(text.substr(i, n));
      i += n;
    } else {
      out.append(replacement_character);
      i += consumed;
    }
  }
  return out;
}

std::string rfc3339_utc(std::int64_t ns_since_epoch) {
  using namespace std::chrono;
  const sys_time<nanoseconds> t{nanoseconds{ns_since_epoch}};
  const auto day = floor<days>(t);
  const year_month_day ymd{day};
  const hh_mm_ss<microseconds> time{floor<microseconds>(t - day)};
  // The int64 nanosecond range spans the years 1677 to 2262: always four digits.
  char text[40];
  const int n = std::snprintf(
      text, sizeof text, "%04d-%02u-%02uT%02d:%02d:%02d.%06dZ", static_cast<int>(ymd.year()),
      static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
      static_cast<int>(time.hours().count()), static_cast<int>(time.minutes().count()),
      static_cast<int>(time.seconds().count()), static_cast<int>(time.subseconds().count()));
  return std::string(text, static_cast<std::size_t>(n));
}

std::string artifacts_json(std::string_view job_uuid, std::vector<store::checkpoint> checkpoints) {
  std::sort(checkpoints.begin(), checkpoints.end(),
            [](const store::checkpoint& a, const store::checkpoint& b) {
              return std::tie(a.epoch, a.step, a.created_at_ns, a.path) <
                     std::tie(b.epoch, b.step, b.created_at_ns, b.path);
            });
  const boost::json::string uuid = json_string(job_uuid);
  boost::json::array items;
  items.reserve(checkpoints.size());
  for (const store::checkpoint& c : checkpoints) {
    boost::json::object item;
    item.reserve(6);
    item.emplace("identifier", json_string(c.identifier));
    item.emplace("created_at", rfc3339_utc(c.created_at_ns));
    item.emplace("epoch", c.epoch);
    item.emplace("post_training_job_id", uuid);
    item.emplace("path", json_string(c.path));
    // JSON has no NaN or infinity, and the schema wants all four numbers or
    // no metrics object at all.
    if (c.metrics && finite(*c.metrics)) {
      boost::json::object metrics;
      metrics.reserve(4);
      metrics.emplace("epoch", c.metrics->epoch);
      metrics.emplace("train_loss", c.metrics->train_loss);
      metrics.emplace("validation_loss", c.metrics->validation_loss);
      metrics.emplace("perplexity", c.metrics->perplexity);
      item.emplace("training_metrics", std::move(metrics));
    }
    items.emplace_back(std::move(item));
  }
  boost::json::object body;
  body.emplace("job_uuid", uuid);
  body.emplace("checkpoints", std::move(items));
  return boost::json::serialize(body);
}

std::string jobs_json(const std::vector<std::string_view>& job_uuids) {
  boost::json::array data;
  data.reserve(job_uuids.size());
  for (std::string_view uuid : job_uuids) {
    boost::json::object item;
    item.emplace("job_uuid", json_string(uuid));
    data.emplace_back(std::move(item));
  }
  boost::json::object body;
  body.emplace("data", std::move(data));
  return boost::json::serialize(body);
}

}  // namespace ckptd::api
