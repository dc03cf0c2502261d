#pragma once
// A job's status from what its folder shows. Pure: the engine gathers the
// facts from disk, this decides. The rules, in order (the README lists them):
//  1. ckptd's job manifest (ckptd-job.json in the job folder) states a status:
//     it wins. Terminal statuses complete at the manifest's mtime.
//  2. A final artifact is present (a Trainer run's train_results.json or
//     all_results.json, or a complete merged_model/ or dpo_model/ of
//     llama-stack's huggingface provider): completed, at its mtime.
//  3. The folder holds a checkpoint or anything else being written:
//     in_progress.
//  4. Otherwise (an empty folder): scheduled.
// started_at is the job folder's birth time where the filesystem keeps one,
// else when ckptd first saw it; never later than its first checkpoint.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ckptd::watcher {

inline constexpr std::string_view job_manifest_file = "ckptd-job.json";

struct job_facts {
  std::optional<std::string> manifest_status;  // a valid status from ckptd-job.json
  std::int64_t manifest_mtime_ns = 0;
  std::optional<std::int64_t> final_artifact_mtime_ns;
  bool has_checkpoints = false;
  bool has_other_content = false;  // anything in the folder besides the job manifest
  std::int64_t birth_ns = 0;       // 0 when unknown
  std::int64_t first_seen_ns = 0;
  std::int64_t earliest_checkpoint_ns = 0;  // 0 without checkpoints
};

struct job_verdict {
  std::string status;
  std::int64_t started_at_ns = 0;    // 0: unknown
  std::int64_t completed_at_ns = 0;  // 0: not completed
};

[[nodiscard]] job_verdict infer_job_status(const job_facts& facts);

// The status a job manifest states, when it parses and names one of
// llama-stack's statuses; nullopt otherwise. Format: {"status": "completed"}.
[[nodiscard]] std::optional<std::string> parse_job_manifest(std::string_view text);

}  // namespace ckptd::watcher
