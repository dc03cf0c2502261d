#pragma once
// JSON bodies of the post-training routes, built once per change.
//
// Everything here is pure: values in, bytes out. The shapes are llama-stack's
// schemas exactly (additionalProperties: false), so nothing is added to them.

#include <ckptd/store.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ckptd::api {

// `text` with every ill-formed UTF-8 sequence (stray continuation bytes,
// truncated or overlong sequences, surrogates, code points past U+10FFFF)
// replaced by U+FFFD, one replacement per maximal ill-formed subpart as
// Unicode recommends. Well-formed input comes back unchanged. File names on
// Linux are arbitrary bytes; JSON text must be UTF-8.
[[nodiscard]] std::string to_valid_utf8(std::string_view text);

// RFC 3339 UTC with microseconds, e.g. "2026-11-29T10:08:38.123456Z", for
// nanoseconds since the Unix epoch (truncated towards the past).
[[nodiscard]] std::string rfc3339_utc(std::int64_t ns_since_epoch);

// PostTrainingJobArtifactsResponse for the job: checkpoints ordered by epoch,
// step, created_at, then path; post_training_job_id is the job's uuid;
// training_metrics is left out when any of its numbers is NaN or infinite.
[[nodiscard]] std::string artifacts_json(std::string_view job_uuid,
                                         std::vector<store::checkpoint> checkpoints);

// ListPostTrainingJobsResponse: {"data":[{"job_uuid":...}, ...]} in the given order.
[[nodiscard]] std::string jobs_json(const std::vector<std::string_view>& job_uuids);

}  // namespace ckptd::api
