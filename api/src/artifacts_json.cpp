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
  json_text::append_rfc3339_utc(out, ns);
  out += '"';
}

}  // namespace

job_status status_of(const store::job& record) {
  job_status status;
  if (!record.status.empty()) status.status = record.status;
  if (record.started_at_ns != 0) status.started_at_ns = record.started_at_ns;
  if (record.completed_at_ns != 0) status.completed_at_ns = record.completed_at_ns;
  return status;
}

shared_job_bodies shared_job_json(std::string_view job_uuid,
                                  std::vector<store::checkpoint> checkpoints,
                                  const job_status& status) {
  json_text::order_checkpoints(checkpoints);
  std::string uuid;
  json_text::append_string(uuid, job_uuid);

  shared_job_bodies out;
  out.artifacts += "{\"job_uuid\":";
  out.artifacts += uuid;
  out.artifacts += ",\"checkpoints\":";
  out.checkpoints_at = out.artifacts.size();
  json_text::append_checkpoints(out.artifacts, checkpoints, job_uuid);
  out.artifacts += '}';
  // Kept for as long as the job does not change: no spare capacity.
  out.artifacts.shrink_to_fit();

  out.status_head += "{\"job_uuid\":";
  out.status_head += uuid;
  out.status_head += ",\"status\":\"";
  out.status_head += status_word(status.status);
  out.status_head += '"';
  if (status.started_at_ns) append_time(out.status_head, "started_at", *status.started_at_ns);
  if (status.completed_at_ns) append_time(out.status_head, "completed_at", *status.completed_at_ns);
  out.status_head += ",\"checkpoints\":";
  return out;
}

job_bodies job_json(std::string_view job_uuid, std::vector<store::checkpoint> checkpoints,
                    const job_status& status) {
  shared_job_bodies shared = shared_job_json(job_uuid, std::move(checkpoints), status);
  job_bodies out;
  out.status = std::move(shared.status_head);
  out.status += std::string_view(shared.artifacts).substr(shared.checkpoints_at);
  out.artifacts = std::move(shared.artifacts);
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
