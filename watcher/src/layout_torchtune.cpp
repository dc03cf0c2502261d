// llama-stack's inline torchtune provider (LoRA single device):
//
//   <checkpoint root>/<model id>-sft-<epoch>/     (or -dpo-; epoch 0-based)
//     log/log_<unix seconds>.txt     <- created at the START of the epoch
//     params.json tokenizer.model orig_params.json    (copied, meta format)
//     consolidated.00.pth            LoRA merged into the base (meta format)
//     adapter/adapter.pth            LoRA weights only        (meta format)
//     adapter_model.pt  adapter/adapter_model.safetensors
//     adapter/adapter_config.json    (huggingface format, then copied files)
//
// The folder exists all epoch long with only log/ in it, and the save has no
// marker, no rename and no state file: the checkpoint is "settling" once it
// holds weights that all pass their format checks, and the engine calls it
// complete after a quiet period.
//
// The per-epoch DiskLogger file under log/ is not part of the checkpoint: it
// is appended during the epoch and closed only when the next epoch's logger
// replaces it, after the save. So log/ counts neither for completed_at_ns nor
// for the fingerprint.
//
// No metrics: the log holds per-step training losses only; validation loss
// and perplexity are computed after the save and never written to disk.

#include "formats.hpp"
#include "layouts.hpp"

#include <algorithm>

namespace ckptd::watcher {

namespace {

// 9 digits fit int64 with room to spare; no run has a billion epochs.
constexpr std::size_t max_epoch_digits = 9;
constexpr std::string_view log_folder = "log/";

// "<model>-sft-<epoch>" or "<model>-dpo-<epoch>": model ids contain dots and
// dashes ("Llama3.2-3B-Instruct"), so the name is read from the end. The
// epoch is canonical decimal, as Python formats it.
std::optional<std::int64_t> folder_epoch(std::string_view name) {
  const auto dash = name.rfind('-');
  if (dash == std::string_view::npos) return std::nullopt;
  const auto digits = name.substr(dash + 1);
  if (digits.empty() || digits.size() > max_epoch_digits) return std::nullopt;
  if (digits.size() > 1 && digits.front() == '0') return std::nullopt;
  std::int64_t epoch = 0;
  for (const char ch : digits) {
    if (ch < '0' || ch > '9') return std::nullopt;
    epoch = epoch * 10 + (ch - '0');
  }
  const auto stem = name.substr(0, dash);                   // "<model>-sft"
  constexpr std::size_t algorithm_bytes = 4;                // "-sft" / "-dpo"
  if (stem.size() <= algorithm_bytes) return std::nullopt;  // the model id is not empty
  const auto algorithm = stem.substr(stem.size() - algorithm_bytes);
  if (algorithm != "-sft" && algorithm != "-dpo") return std::nullopt;
  return epoch;
}

bool is_consolidated_name(std::string_view rel) {
  // consolidated.00.pth, consolidated.01.pth, ... (Meta's sharded naming)
  constexpr std::string_view prefix = "consolidated.";
  constexpr std::string_view suffix = ".pth";
  if (rel.size() <= prefix.size() + suffix.size()) return false;
  if (rel.substr(0, prefix.size()) != prefix) return false;
  if (rel.substr(rel.size() - suffix.size()) != suffix) return false;
  const auto digits = rel.substr(prefix.size(), rel.size() - prefix.size() - suffix.size());
  return std::all_of(digits.begin(), digits.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
}

bool is_weight_name(std::string_view rel) {
  if (rel == "adapter/adapter.pth" || rel == "adapter/adapter_model.safetensors" ||
      rel == "adapter/adapter_model.bin") {
    return true;
  }
  if (rel.find('/') != std::string_view::npos) return false;
  if (is_consolidated_name(rel)) return true;
  // adapter_model.pt / .bin / .safetensors (not the empty adapter_model/
  // folder torchtune also creates: callers skip folders).
  if (rel == "adapter_model.pt" || rel == "adapter_model.bin" ||
      rel == "adapter_model.safetensors") {
    return true;
  }
  // model.safetensors, model-0000k-of-0000n.safetensors and their index.
  const bool model_stem = rel.substr(0, 6) == "model." || rel.substr(0, 6) == "model-";
  return model_stem && (rel.ends_with(".safetensors") || rel == "model.safetensors.index.json");
}

class llama_stack_torchtune final : public layout {
 public:
  std::string_view name() const override { return "llama-stack-torchtune"; }
  int specificity() const override { return llama_stack_torchtune_specificity; }

  bool claims_name(std::string_view name, bool is_dir) const override {
    return is_dir && folder_epoch(name).has_value();
  }

  recognition recognise(const candidate_view& c) const override {
    recognition r;
    const auto epoch = folder_epoch(c.name());
    if (!c.is_dir() || !epoch) {
      r.problem = "not a <model>-sft-<epoch> or <model>-dpo-<epoch> folder";
      return r;
    }
    r.epoch = *epoch;

    std::vector<const file_info*> weights;
    for (const auto& f : c.files()) {
      if (!f.is_dir && is_weight_name(f.rel)) weights.push_back(&f);
    }
    if (weights.empty()) return r;  // the epoch is still running: nothing is wrong
    if (auto p = weight_set_problem(c, weights); !p.empty()) {
      r.problem = std::move(p);
      return r;
    }

    r.verdict = state::settling;
    for (const auto& f : c.files()) {
      if (f.is_dir || f.rel.starts_with(log_folder)) continue;
      r.completed_at_ns = std::max(r.completed_at_ns, f.mtime_ns);
    }
    fingerprint_hash hash;
    for (const auto* f : weights) {
      hash.add(f->rel);
      hash.add(f->size);
      hash.add(static_cast<std::uint64_t>(f->mtime_ns));
    }
    r.fingerprint = "torchtune:" + std::to_string(weights.size()) + ":" + hash.hex();
    return r;
  }
};

}  // namespace

const layout& llama_stack_torchtune_layout() {
  static const llama_stack_torchtune instance;
  return instance;
}

}  // namespace ckptd::watcher
