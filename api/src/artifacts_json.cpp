#include "artifacts_json.hpp"

#include <array>
#include <utility>

namespace ckptd::api {
namespace {

constexpr std::array<std::string_view, 5> known_statuses{"scheduled", "in_progress", "completed",
                                                         "failed", "cancelled"};

std::string_view status_word(std::string_view status) {
  for (std::string_view known : known_statuses) {
    if (status == known) return known;
  }
  return known_statuses[0];
}

void append_time(std::string& out, std::string_view key, std::int64_t ns) {
  out += ",\"";
  out += key;
  out += "\":\"";
  out += rfc3339_utc(ns);
  out += '"';
}

}  // namespace

job_bodies job_json(std::string_view job_uuid, std::vector<store::checkpoint> checkpoints,
                    const job_status& status) {
  json_text::order_checkpoints(checkpoints);
  std::string uuid;
  json_text::append_string(uuid, job_uuid);
  std::string items;
  json_text::append_checkpoints(items, checkpoints, job_uuid);

  job_bodies out;
  out.artifacts.reserve(uuid.size() + items.size() + 32);
  out.artifacts += "{\"job_uuid\":";
  out.artifacts += uuid;
  out.artifacts += ",\"checkpoints\":";
  out.artifacts += items;
  out.artifacts += '}';

  out.status.reserve(uuid.size() + items.size() + 128);
  out.status += "{\"job_uuid\":";
  out.status += uuid;
  out.status += ",\"status\":\"";
  out.status += status_word(status.status);
  out.status += '"';
  if (status.started_at_ns) append_time(out.status, "started_at", *status.started_at_ns);
  if (status.completed_at_ns) append_time(out.status, "completed_at", *status.completed_at_ns);
  out.status += ",\"checkpoints\":";
  out.status += items;
  out.status += '}';
  return out;
}

std::string artifacts_json(std::string_view job_uuid, std::vector<store::checkpoint> checkpoints) {
  return job_json(job_uuid, std::move(checkpoints), {}).artifacts;
}

std::string jobs_json(const std::vector<std::string_view>& job_uuids) {
  std::string out = "{\"data\":[";
  bool first = true;
  for (std::string_view uuid : job_uuids) {
    if (!first) out += ',';
    first = false;
    out += "{\"job_uuid\":";
    json_text::append_string(out, uuid);
    out += '}';
  }
  out += "]}";
  return out;
}

}  // namespace ckptd::api
