// DeepSpeed engine checkpoints (engine.save_checkpoint):
//
//   <save_dir>/
//     latest                     <- the newest tag, e.g. "global_step1200"; rewritten in place
//     zero_to_fp32.py
//     global_step1200/           <- default tag: "global_step" + the engine's global step
//       mp_rank_00_model_states.pt                    module + client state
//       zero_pp_rank_<r>_mp_rank_00_optim_states.pt   one per data-parallel rank
//       (ZeRO-3: zero_pp_rank_<r>_mp_rank_00_model_states.pt; pipeline
//        parallel: layer_<XX>-model_states.pt; MoE: expert_<i>_..._model_states.pt)
//
// Rank 0 writes `latest` after its own files, so a tag is complete once
// `latest` names it. `latest` names only the newest tag and older tags stay
// complete, so a tag also counts when `latest` names a NEWER tag of the same
// "global_step<N>" family. A tag newer than `latest` is a save in progress
// (or one that crashed). The model-states files must also pass the ZIP check.
// Other ranks' optimizer shards may still land after `latest` (no barrier
// before it): they are not checked, so the checkpoint is reported at once
// and the late files only refresh it (they are not in the fingerprint).
//
// Only top-level "global_step<N>" folders of a run are judged here: the
// engine never treats a folder inside another checkpoint (an HF Trainer
// "checkpoint-N/global_stepN/") as a candidate of its own.
//
// step = N; no epoch (0) and no metrics: DeepSpeed writes none to disk.

#include "formats.hpp"
#include "layouts.hpp"

#include <algorithm>

namespace ckptd::watcher {

namespace {

constexpr std::string_view tag_prefix = "global_step";
constexpr std::string_view latest_file = "latest";
// A tag is a short name; a larger `latest` is not DeepSpeed's.
constexpr std::uint64_t max_latest_bytes = 4096;

// "global_step<N>": canonical decimal, as the engine formats its step.
std::optional<std::int64_t> tag_step(std::string_view name) {
  if (!name.starts_with(tag_prefix)) return std::nullopt;
  return parse_decimal(name.substr(tag_prefix.size()), /*allow_padding=*/false);
}

bool is_model_states_name(std::string_view rel) {
  return rel.find('/') == std::string_view::npos && rel.ends_with("model_states.pt");
}

class deepspeed final : public layout {
 public:
  std::string_view name() const override { return "deepspeed"; }
  int specificity() const override { return deepspeed_specificity; }

  bool claims_name(std::string_view name, bool is_dir) const override {
    return is_dir && tag_step(name).has_value();
  }

  bool watches_sibling(std::string_view file_name) const override {
    return file_name == latest_file;
  }

  std::vector<std::string> sibling_inputs(std::string_view, bool) const override {
    return {std::string(latest_file)};
  }

  recognition recognise(const candidate_view& c) const override {
    recognition r;
    const auto step = tag_step(c.name());
    if (!c.is_dir() || !step) {
      r.problem = "not a global_step<N> folder";
      return r;
    }
    r.step = *step;

    const auto latest = c.read_sibling(latest_file, max_latest_bytes);
    if (!latest) {
      // Not written yet (a first save in progress), or save_latest=False.
      if (c.sibling_exists(latest_file)) {
        r.problem = "latest: unreadable, or larger than a tag name can be";
      }
      return r;
    }
    const auto tag = trim_ascii(*latest);
    if (tag != c.name()) {
      const auto latest_step = tag_step(tag);
      if (!latest_step) {
        if (tag.empty()) return r;  // being rewritten: judged again on its close
        r.problem = "latest names \"" + std::string(tag.substr(0, 64)) +
                    "\", not a global_step<N> tag; cannot tell whether this tag is complete";
        return r;
      }
      // Older than this tag: this one is still being saved (or crashed).
      if (*latest_step <= *step) return r;
    }

    std::vector<const file_info*> states;
    for (const auto& f : c.files()) {
      if (!f.is_dir && is_model_states_name(f.rel)) states.push_back(&f);
    }
    if (states.empty()) {
      r.problem = "latest names this tag or a newer one, but it holds no *model_states.pt";
      return r;
    }
    complete_when_whole_zips(c, states, "deepspeed", r);
    return r;
  }
};

}  // namespace

const layout& deepspeed_layout() {
  static const deepspeed instance;
  return instance;
}

}  // namespace ckptd::watcher
