// Hugging Face Trainer checkpoints (also TRL's SFT/DPO trainers and
// llama-stack's huggingface provider, which subclass it):
//
//   <output_dir>/checkpoint-<global_step>/
//     config.json  model.safetensors (or shards + index, or adapter_model.*)
//     training_args.bin  optimizer.pt  scheduler.pt  rng_state.pth
//     trainer_state.json            <- written last by the main process
//
// The Trainer writes straight into the final folder (no rename, no marker
// file), so trainer_state.json is the completion signal. It is a plain
// truncate-and-write, so it must parse completely and its global_step must
// name this folder's step; until then the folder is in progress.

#include "formats.hpp"
#include "layouts.hpp"
#include "trainer_state.hpp"

#include <cmath>

namespace ckptd::watcher {

namespace {

constexpr std::string_view folder_prefix = "checkpoint-";
// 18 decimal digits always fit int64; no real run gets near.
constexpr std::size_t max_step_digits = 18;
constexpr std::string_view state_file = "trainer_state.json";
// A long run's log_history is a few MB; past this the file is not a real one
// and is reported rather than read.
constexpr std::uint64_t max_state_bytes = 64ull << 20;
// How close below a whole number a float epoch may be and still count as that
// whole number. The Trainer computes epoch as a float sum of per-step
// fractions, so at an epoch boundary it may read 2.9999999999 instead of 3.
// 1e-6 is far above that rounding noise and far below one step's share of an
// epoch (an epoch would need a million optimizer steps for a real fraction to
// come this close). Releases that rounded epochs to two decimals can show up
// to 0.005 too much; that cannot be undone from the file.
constexpr double epoch_tolerance = 1e-6;
// Whole epochs beyond this are clamped (a double that large is garbage, and
// converting it to int64 unchecked would be undefined).
constexpr double max_epochs = 1e12;

// "checkpoint-<step>": canonical decimal, as the Trainer formats global_step
// (no sign, no leading zeros, so each step has exactly one folder name).
std::optional<std::int64_t> folder_step(std::string_view name) {
  if (name.substr(0, folder_prefix.size()) != folder_prefix) return std::nullopt;
  const auto digits = name.substr(folder_prefix.size());
  if (digits.empty() || digits.size() > max_step_digits) return std::nullopt;
  if (digits.size() > 1 && digits.front() == '0') return std::nullopt;
  std::int64_t step = 0;
  for (const char ch : digits) {
    if (ch < '0' || ch > '9') return std::nullopt;
    step = step * 10 + (ch - '0');
  }
  return step;
}

// Whole epochs completed: floor(epoch + epoch_tolerance), 0 for negative or
// NaN values (which JSON cannot carry, but Python's json writes).
std::int64_t whole_epochs(double epoch) {
  if (!(epoch > 0)) return 0;
  return static_cast<std::int64_t>(std::floor(std::min(epoch, max_epochs) + epoch_tolerance));
}

// Weight files directly in the folder. Optimizer, scheduler, RNG and
// training_args files are not weights and are not checked.
bool is_weight_name(std::string_view rel) {
  if (rel.find('/') != std::string_view::npos) return false;
  for (const std::string_view stem : {"model", "pytorch_model", "adapter_model"}) {
    if (rel.substr(0, stem.size()) != stem) continue;
    const auto rest = rel.substr(stem.size());
    if (rest.empty() || (rest.front() != '.' && rest.front() != '-')) continue;
    for (const std::string_view suffix : {".safetensors", ".bin", ".index.json"}) {
      if (rest.size() >= suffix.size() && rest.substr(rest.size() - suffix.size()) == suffix) {
        return true;
      }
    }
  }
  return false;
}

class hf_trainer final : public layout {
 public:
  std::string_view name() const override { return "hf-trainer"; }
  int specificity() const override { return hf_trainer_specificity; }

  bool claims_name(std::string_view name, bool is_dir) const override {
    return is_dir && folder_step(name).has_value();
  }

  recognition recognise(const candidate_view& c) const override {
    recognition r;
    const auto step = folder_step(c.name());
    if (!c.is_dir() || !step) {
      r.problem = "not a checkpoint-<step> folder";
      return r;
    }
    r.step = *step;
    const auto* state = find_file(c, state_file);
    if (!state || state->is_dir) return r;  // still saving: nothing is wrong yet

    const auto text = read_small_file(c, *state, max_state_bytes, r.problem);
    if (!text) return r;
    boost::system::error_code ec;
    const trainer_state parsed = read_trainer_state(*text, ec);
    if (ec) {
      r.problem = std::string(state_file) + ": not valid JSON (" + ec.message() +
                  "); truncated or still being written";
      return r;
    }
    if (!parsed.is_object) {
      r.problem = std::string(state_file) + ": not a JSON object";
      return r;
    }
    if (!parsed.global_step) {
      r.problem = std::string(state_file) + ": no integer global_step";
      return r;
    }
    if (*parsed.global_step != *step) {
      r.problem = std::string(state_file) + ": global_step " +
                  std::to_string(*parsed.global_step) + " does not match the folder's step " +
                  std::to_string(*step);
      return r;
    }
    // epoch is null before the first step; absent in no release we know of.
    double epoch = 0;
    if (parsed.has_epoch && !parsed.epoch_is_null) {
      if (!parsed.epoch) {
        r.problem = std::string(state_file) + ": epoch is not a number";
        return r;
      }
      epoch = *parsed.epoch;
    }

    // The weights were written before trainer_state.json; if they fail the
    // format check now, the checkpoint is damaged and stays incomplete.
    std::vector<const file_info*> weights;
    for (const auto& f : c.files()) {
      if (!f.is_dir && is_weight_name(f.rel)) weights.push_back(&f);
    }
    if (!weights.empty()) {
      if (auto p = weight_set_problem(c, weights); !p.empty()) {
        r.problem = std::move(p);
        return r;
      }
    }

    r.verdict = state::complete;
    r.epoch = whole_epochs(epoch);
    r.completed_at_ns = state->mtime_ns;
    r.fingerprint = "hf:" + std::to_string(state->size) + ":" + std::to_string(state->mtime_ns);
    add_metrics(parsed, *step, r);
    return r;
  }

 private:
  // train_loss: the last "loss" logged at or before the checkpoint's step;
  // validation_loss: the last "eval_loss" at or before it (evaluation runs
  // before the save in the same step, so normally exactly at it); perplexity:
  // exp(validation_loss), as run_clm derives it. Only when all are finite.
  static void add_metrics(const trainer_state& parsed, std::int64_t step, recognition& r) {
    if (!parsed.has_log_history) {
      r.problem = std::string(state_file) + ": no log_history, so no metrics";
      return;
    }
    // A loss that is present but not a number (Python's NaN, read as null)
    // still replaces earlier ones: it is the value at that step.
    std::optional<double> train_loss;
    std::optional<double> validation_loss;
    for (const auto& entry : parsed.log_history) {
      if (!entry.step || *entry.step > step) continue;
      if (entry.loss) train_loss = entry.loss;
      if (entry.eval_loss) validation_loss = entry.eval_loss;
    }
    // Built only for a problem: most checkpoints have their metrics.
    const auto at = [step] { return " at or before step " + std::to_string(step); };
    if (!train_loss) {
      r.problem = "no training loss logged" + at() + ", so no metrics";
      return;
    }
    if (!validation_loss) {
      r.problem = "no eval_loss logged" + at() + " (evaluation off?), so no metrics";
      return;
    }
    const double perplexity = std::exp(*validation_loss);
    if (!std::isfinite(*train_loss) || !std::isfinite(*validation_loss) ||
        !std::isfinite(perplexity)) {
      r.problem = "losses" + at() + " or the perplexity are not finite, so no metrics";
      return;
    }
    r.metrics = store::training_metrics{r.epoch, *train_loss, *validation_loss, perplexity};
  }
};

}  // namespace

const layout& hf_trainer_layout() {
  static const hf_trainer instance;
  return instance;
}

}  // namespace ckptd::watcher
