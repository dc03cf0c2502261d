#include "job_status.hpp"

#include "formats.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <array>

namespace ckptd::watcher {
namespace {

constexpr std::array<std::string_view, 5> statuses = {"scheduled", "in_progress", "completed",
                                                      "failed", "cancelled"};

bool is_terminal(std::string_view status) {
  return status == "completed" || status == "failed" || status == "cancelled";
}

}  // namespace

std::optional<std::string> parse_job_manifest(std::string_view text) {
  json_arena arena;
  boost::system::error_code ec;
  auto value = boost::json::parse(text, ec, arena.storage());
  if (ec || !value.is_object()) return std::nullopt;
  const auto* status = value.as_object().if_contains("status");
  if (status == nullptr || !status->is_string()) return std::nullopt;
  std::string_view s = status->get_string();
  if (std::find(statuses.begin(), statuses.end(), s) == statuses.end()) return std::nullopt;
  return std::string(s);
}

job_verdict infer_job_status(const job_facts& f) {
  job_verdict v;
  if (f.manifest_status) {
    v.status = *f.manifest_status;
    if (is_terminal(v.status)) v.completed_at_ns = f.manifest_mtime_ns;
  } else if (f.final_artifact_mtime_ns) {
    v.status = "completed";
    v.completed_at_ns = *f.final_artifact_mtime_ns;
  } else if (f.has_checkpoints || f.has_other_content) {
    v.status = "in_progress";
  } else {
    v.status = "scheduled";
  }
  if (v.status != "scheduled") {
    std::int64_t started = f.birth_ns != 0 ? f.birth_ns : f.first_seen_ns;
    if (f.earliest_checkpoint_ns != 0 && (started == 0 || f.earliest_checkpoint_ns < started))
      started = f.earliest_checkpoint_ns;
    v.started_at_ns = started;
    if (v.completed_at_ns != 0 && v.started_at_ns > v.completed_at_ns)
      v.started_at_ns = v.completed_at_ns;
  }
  return v;
}

}  // namespace ckptd::watcher
