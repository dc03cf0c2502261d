// NVIDIA NeMo checkpoints:
//
//   NeMo 1.x (exp_manager + NeMoModelCheckpoint): Lightning .ckpt files
//   <exp_dir>/<name>/<date>/checkpoints/
//     <name>--val_loss=0.4567-epoch=3.ckpt        default '{name}--{val_loss:.4f}-{epoch}'
//     <name>--val_loss=0.4567-epoch=3-last.ckpt
//     <name>.nemo                                 tar: model_config.yaml, model_weights.ckpt, ...
//     <name>-v1.nemo                              the previous .nemo, moved aside; deleted
//                                                 once the new one is written (staging)
//   NeMo 2.x (nemo.lightning): Megatron distributed checkpoints are folders
//   <log_dir>/<name>/<version>/checkpoints/
//     megatron_gpt--val_loss=2.1034-epoch=0-consumed_samples=20480.0/
//       weights/    .metadata, __*_*.distcp, metadata.json
//       context/    io.json, model.yaml, tokenizer files (after weights, by rank 0)
//     megatron_gpt--val_loss=2.1034-epoch=0-consumed_samples=20480.0-last/
//     megatron_gpt--val_loss=1.9871-epoch=1-consumed_samples=40960.0-unfinished
//
// The completion signal is the "-unfinished" marker: before a save, rank 0
// creates an empty file named like the checkpoint minus ".ckpt" / ".nemo" /
// "-EMA", plus "-unfinished"; after the save (async: after its finalize) it
// is removed. The same marker wraps deletions. So a checkpoint is complete
// when it is whole and its marker is gone:
//  - .ckpt file: ZIP end record in place;
//  - .nemo file: a tar archive whose member headers lead to the two zero end
//    blocks (an old gzip-compressed .nemo cannot be checked cheaply: it is
//    settling, complete after a quiet period);
//  - folder: weights/.metadata or weights/metadata.json, and context/.
//
// NeMo's "--" names also end in ".ckpt", so Lightning claims them too; this
// layout is more specific and wins (layouts.cpp). A "*.ckpt" FOLDER is left
// to Lightning (a DeepSpeed or FSDP Lightning checkpoint under NeMo's name).
//
// epoch from "epoch=", step from "step=" (0 and -1 when absent).
// Metrics from the name only: "val_loss" is the validation loss; NeMo names
// carry no training loss, so there are training_metrics only when a template
// also puts one in ("train_loss=" or "reduced_train_loss=").

#include "formats.hpp"
#include "layouts.hpp"

#include <algorithm>
#include <array>
#include <cmath>

namespace ckptd::watcher {

namespace {

constexpr std::string_view nemo_suffix = ".nemo";
constexpr std::string_view ckpt_suffix = ".ckpt";
constexpr std::string_view marker_suffix = "-unfinished";
constexpr std::string_view ema_suffix = "-EMA";
constexpr std::string_view last_suffix = "-last";

enum class kind { none, nemo_file, ckpt_file, folder };

// The name without its extension.
std::string_view stem_of(std::string_view name, kind k) {
  if (k == kind::nemo_file) return name.substr(0, name.size() - nemo_suffix.size());
  if (k == kind::ckpt_file) return name.substr(0, name.size() - ckpt_suffix.size());
  return name;
}

// "<name>--<key>=<value>...": the part after the first "--" holds fields.
bool has_metric_fields(std::string_view stem) {
  const auto dashes = stem.find("--");
  return dashes != std::string_view::npos && !name_fields(stem.substr(dashes + 2)).empty();
}

kind kind_of(std::string_view name, bool is_dir) {
  if (is_dir) {
    if (name.ends_with(ckpt_suffix)) return kind::none;  // Lightning's folder checkpoints
    return has_metric_fields(name) ? kind::folder : kind::none;
  }
  if (name.size() > nemo_suffix.size() && name.ends_with(nemo_suffix)) return kind::nemo_file;
  if (name.size() > ckpt_suffix.size() && name.ends_with(ckpt_suffix) &&
      has_metric_fields(stem_of(name, kind::ckpt_file))) {
    return kind::ckpt_file;
  }
  return kind::none;
}

// NeMo's marker for a checkpoint of this name.
std::string marker_of(std::string_view name, kind k) {
  auto stem = stem_of(name, k);
  if (stem.ends_with(ema_suffix)) stem.remove_suffix(ema_suffix.size());
  return std::string(stem) + std::string(marker_suffix);
}

std::optional<std::int64_t> integral(std::string_view text) {
  if (auto n = parse_decimal(text, /*allow_padding=*/true)) return n;
  const auto x = parse_float(text);
  if (!x || !(*x >= 0) || *x >= 1e15 || std::trunc(*x) != *x) return std::nullopt;
  return static_cast<std::int64_t>(*x);
}

class nemo final : public layout {
 public:
  std::string_view name() const override { return "nemo"; }
  int specificity() const override { return nemo_specificity; }

  bool claims_name(std::string_view name, bool is_dir) const override {
    return kind_of(name, is_dir) != kind::none;
  }

  bool watches_sibling(std::string_view file_name) const override {
    return file_name.size() > marker_suffix.size() && file_name.ends_with(marker_suffix);
  }

  std::vector<std::string> sibling_inputs(std::string_view candidate_name,
                                          bool is_dir) const override {
    const auto k = kind_of(candidate_name, is_dir);
    if (k == kind::none) return {};
    return {marker_of(candidate_name, k)};
  }

  recognition recognise(const candidate_view& c) const override {
    recognition r;
    const auto k = kind_of(c.name(), c.is_dir());
    if (k == kind::none) {
      r.problem = "not a .nemo file, nor a NeMo \"<name>--<metric>=...\" checkpoint";
      return r;
    }
    if (c.sibling_exists(marker_of(c.name(), k))) return r;  // NeMo is still saving it

    if (k == kind::folder) {
      if (!judge_folder(c, r)) return r;
    } else {
      const auto* found = find_file(c, "");
      if (!found) return r;  // gone since it was listed
      const auto& self = *found;
      if (k == kind::nemo_file && is_gzip(c, self)) {
        r.verdict = state::settling;
      } else {
        auto p = k == kind::nemo_file ? tar_problem(c, self) : zip_problem(c, self);
        if (!p.empty()) {
          r.problem = std::move(p);
          return r;
        }
        r.verdict = state::complete;
      }
      r.completed_at_ns = self.mtime_ns;
      r.fingerprint = "nemo:" + std::to_string(self.size) + ":" + std::to_string(self.mtime_ns);
    }
    add_name_fields(stem_of(c.name(), k), r);
    return r;
  }

 private:
  static bool judge_folder(const candidate_view& c, recognition& r) {
    const auto* context = find_file(c, "context");
    const file_info* weights_done = nullptr;
    for (const std::string_view rel : {"weights/.metadata", "weights/metadata.json"}) {
      if (const auto* f = find_file(c, rel); f && !f->is_dir) weights_done = f;
    }
    if (!weights_done || !context || !context->is_dir) {
      // No marker, yet not whole: a save that crashed (NeMo skips these too).
      r.problem = "no -unfinished marker, but weights/.metadata or context/ is missing";
      return false;
    }
    fingerprint_hash hash;
    std::size_t files = 0;
    for (const auto& f : c.files()) {
      if (f.is_dir) continue;
      hash.add(f);
      ++files;
      r.completed_at_ns = std::max(r.completed_at_ns, f.mtime_ns);
    }
    r.verdict = state::complete;
    r.fingerprint = "nemo-dist:" + std::to_string(files) + ":" + hash.hex();
    return true;
  }

  // epoch=, step= and metrics from "<name>--val_loss=2.1034-epoch=0-...".
  static void add_name_fields(std::string_view stem, recognition& r) {
    const auto dashes = stem.find("--");
    if (dashes == std::string_view::npos) return;  // "<name>.nemo"
    stem.remove_prefix(dashes + 2);
    for (const auto tail : {last_suffix, ema_suffix}) {
      if (stem.ends_with(tail)) stem.remove_suffix(tail.size());
    }
    std::array<std::optional<double>, 3> metrics;
    for (const auto& field : name_fields(stem)) {
      if (field.key == "epoch") {
        if (auto e = integral(field.value)) r.epoch = *e;
      } else if (field.key == "step") {
        if (auto s = integral(field.value)) r.step = *s;
      } else if (const auto role = role_of_metric(field.key); role != metric_role::none) {
        if (const auto value = parse_float(field.value)) {
          metrics[static_cast<std::size_t>(role) - 1] = *value;
        }
      }
    }
    std::string note;
    r.metrics = metrics_if_known(r.epoch, metrics[0], metrics[1], metrics[2], note);
    if (!r.metrics && metrics[0] && metrics[1]) r.problem = std::move(note);
  }
};

}  // namespace

const layout& nemo_layout() {
  static const nemo instance;
  return instance;
}

}  // namespace ckptd::watcher
