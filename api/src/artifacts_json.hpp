#pragma once
// JSON bodies of the post-training routes, built once per change.
//
// Everything here is pure: values in, bytes out. The shapes are llama-stack's
// schemas exactly (additionalProperties: false), so nothing is added to them.
// The Checkpoint objects come from ckptd::json_text, which the watcher's push
// events use too.

#include <ckptd/api.hpp>
#include <ckptd/checkpoint_json.hpp>
#include <ckptd/store.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace ckptd::api {

using json_text::rfc3339_utc;
using json_text::to_valid_utf8;

struct job_bodies {
  std::string artifacts;  // PostTrainingJobArtifactsResponse
  std::string status;     // PostTrainingJobStatusResponse
};

// Both bodies of one job, sharing one ordering of its checkpoints (by epoch,
// step, created_at, then path); post_training_job_id is the job's uuid and
// training_metrics is left out when any of its numbers is NaN or infinite.
// The status body has job_uuid, status, started_at and completed_at when
// known, and checkpoints; a status outside the schema's enum (completed,
// in_progress, failed, scheduled, cancelled) is reported as "scheduled".
[[nodiscard]] job_bodies job_json(std::string_view job_uuid,
                                  std::vector<store::checkpoint> checkpoints,
                                  const job_status& status);

// The same two bodies, the status one split to share the checkpoints array
// with the artifacts one: the status body is status_head followed by
// artifacts from checkpoints_at on (see make_status_body).
struct shared_job_bodies {
  std::string artifacts;
  std::string status_head;
  std::size_t checkpoints_at = 0;
};
[[nodiscard]] shared_job_bodies shared_job_json(std::string_view job_uuid,
                                                std::vector<store::checkpoint> checkpoints,
                                                const job_status& status);

// PostTrainingJobArtifactsResponse alone (as job_json().artifacts).
[[nodiscard]] std::string artifacts_json(std::string_view job_uuid,
                                         std::vector<store::checkpoint> checkpoints);

// ListPostTrainingJobsResponse: {"data":[{"job_uuid":...}, ...]} in the given order.
[[nodiscard]] std::string jobs_json(const std::vector<std::string_view>& job_uuids);

}  // namespace ckptd::api
