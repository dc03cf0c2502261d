// torchtune's own checkpointers (v0.5 and later), as its recipes save:
//
//   <output_dir>/
//     epoch_0/                      0-based index of the epoch just finished
//       model-00001-of-00002.safetensors ... model.safetensors.index.json
//       adapter_model.pt  adapter_model.safetensors  adapter_config.json   (LoRA)
//       adapter_model/                an empty folder torchtune also creates
//       config.json  generation_config.json  tokenizer files ...           (copied)
//       recipe_state.pt               intermediate checkpoints only, last
//     step_1000/                    the same, with dir_prefix "step"
//     logs/log_<unix seconds>.txt   DiskLogger ("Step 12 | loss:1.83 lr:2e-05 ")
//                                   or .jsonl ({"step": 12, "loss": 1.83})
//   Async saves (DistributedCheckpointer): DCP files plus ".metadata" in the
//   folder, or in adapter_model/ for adapter-only saves.
//
// There is no marker and no rename, and the final checkpoint has no
// recipe_state.pt, so a folder is "settling" once it holds weights that all
// pass their format checks (shards with their index, adapters with their
// config), and recipe_state.pt, when present, is a whole ZIP archive; the
// engine calls it complete after a quiet period. A DCP folder is complete
// once ".metadata" is there, at least as new as its data.
//
// epoch: k for epoch_<k> (0-based, the epoch just finished); 0 for step_<n>,
// whose step is n. Metrics: the DiskLogger has training losses only, and
// torchtune computes no validation loss to disk, so there are no
// training_metrics unless the log also carries "val_loss" (then the general
// rule applies). The losses are read for step_<n> folders only (the last
// values logged at or before step n); for epoch_<k> the log does not say
// which step ended epoch k.

#include "formats.hpp"
#include "layouts.hpp"

#include <boost/json/value.hpp>

#include <algorithm>

namespace ckptd::watcher {

namespace {

constexpr std::string_view epoch_prefix = "epoch_";
constexpr std::string_view step_prefix = "step_";
constexpr std::string_view recipe_state_file = "recipe_state.pt";
constexpr std::string_view adapter_config_file = "adapter_config.json";
constexpr std::string_view dcp_metadata_file = ".metadata";
constexpr std::string_view log_folder = "logs";
constexpr std::uint64_t max_adapter_config_bytes = 1ull << 20;
// A long run's log is a few MB; only its tail is read beyond this.
constexpr std::uint64_t max_log_read_bytes = 8ull << 20;
// Resumed runs start a new log each; the newest few are enough.
constexpr std::size_t max_logs_read = 8;

struct folder_key {
  bool is_epoch = false;
  std::int64_t number = 0;
};

std::optional<folder_key> parse_folder(std::string_view name) {
  for (const bool is_epoch : {true, false}) {
    const auto prefix = is_epoch ? epoch_prefix : step_prefix;
    if (!name.starts_with(prefix)) continue;
    if (auto n = parse_decimal(name.substr(prefix.size()), /*allow_padding=*/false)) {
      return folder_key{is_epoch, *n};
    }
  }
  return std::nullopt;
}

bool is_adapter_weights(std::string_view rel) {
  return rel == "adapter_model.pt" || rel == "adapter_model.safetensors";
}

// Top-level weight files: model shards and their index, a single
// model.safetensors, adapter weights. Copied config and tokenizer files are
// not weights; recipe_state.pt is checked on its own.
bool is_weight_name(std::string_view rel) {
  if (rel.find('/') != std::string_view::npos) return false;
  if (is_adapter_weights(rel)) return true;
  const bool model_stem = rel.starts_with("model.") || rel.starts_with("model-");
  return model_stem && (rel.ends_with(".safetensors") || rel == "model.safetensors.index.json");
}

// DCP data in `dir` ("" for the top level) complete: .metadata present and
// at least as new as every .distcp there. nullopt when `dir` holds no DCP.
std::optional<bool> dcp_complete(const candidate_view& c, std::string_view dir,
                                 const file_info** metadata_out) {
  const std::string prefix = dir.empty() ? std::string() : std::string(dir) + "/";
  const auto* metadata = find_file(c, prefix + std::string(dcp_metadata_file));
  std::int64_t newest_data_ns = 0;
  bool any_data = false;
  for (const auto& f : c.files()) {
    if (f.is_dir || !f.rel.starts_with(prefix) || !f.rel.ends_with(".distcp")) continue;
    if (f.rel.find('/', prefix.size()) != std::string::npos) continue;
    any_data = true;
    newest_data_ns = std::max(newest_data_ns, f.mtime_ns);
  }
  if (!any_data && !metadata) return std::nullopt;
  *metadata_out = metadata;
  return metadata && !metadata->is_dir && metadata->size > 0 &&
         metadata->mtime_ns >= newest_data_ns;
}

// One DiskLogger line: "Step 12 | loss:1.8342 lr:2e-05 grad_norm:tensor(0.87) "
// (values are Python str(), tensors included) or a JSONL object.
struct log_entry {
  std::int64_t step = -1;
  std::optional<double> loss;
  std::optional<double> val_loss;
};

std::optional<double> text_value(std::string_view value) {
  // tensor(0.8712) or tensor(0.87, device='cuda:0')
  if (value.starts_with("tensor(")) {
    value.remove_prefix(7);
    value = value.substr(0, value.find_first_of(",)"));
  }
  return parse_float(value);
}

std::optional<log_entry> parse_log_line(std::string_view line) {
  line = trim_ascii(line);
  log_entry e;
  if (line.starts_with("{")) {
    json_arena arena;
    boost::system::error_code ec;
    const auto root = parse_python_json(line, ec, arena.storage());
    const auto* obj = ec ? nullptr : root.if_object();
    const auto* step = obj ? obj->if_contains("step") : nullptr;
    const auto step_value = step ? json_integer(*step) : std::nullopt;
    if (!step_value) return std::nullopt;
    e.step = *step_value;
    if (const auto* v = obj->if_contains("loss")) e.loss = json_number(*v);
    if (const auto* v = obj->if_contains("val_loss")) e.val_loss = json_number(*v);
    return e;
  }
  if (!line.starts_with("Step ")) return std::nullopt;
  const auto bar = line.find(" | ");
  if (bar == std::string_view::npos) return std::nullopt;
  const auto step = parse_decimal(line.substr(5, bar - 5), /*allow_padding=*/false);
  if (!step) return std::nullopt;
  e.step = *step;
  std::string_view rest = line.substr(bar + 3);
  while (!rest.empty()) {
    const auto space = rest.find(' ');
    const auto token = rest.substr(0, space);
    rest = space == std::string_view::npos ? std::string_view() : rest.substr(space + 1);
    const auto colon = token.find(':');
    if (colon == std::string_view::npos) continue;
    const auto key = token.substr(0, colon);
    if (key == "loss") e.loss = text_value(token.substr(colon + 1));
    if (key == "val_loss") e.val_loss = text_value(token.substr(colon + 1));
  }
  return e;
}

// The last loss and validation loss logged at or before `step` in one
// DiskLogger file's text.
struct logged_losses {
  std::optional<double> loss;
  std::optional<double> val_loss;
  bool any_at_or_before = false;
};

logged_losses losses_up_to(std::string_view text, std::int64_t step) {
  logged_losses out;
  std::size_t start = 0;
  while (start < text.size()) {
    const auto end = text.find('\n', start);
    // A line without its newline is still being written.
    if (end == std::string_view::npos) break;
    const auto entry = parse_log_line(text.substr(start, end - start));
    start = end + 1;
    if (!entry || entry->step > step) continue;
    out.any_at_or_before = true;
    if (entry->loss) out.loss = entry->loss;
    if (entry->val_loss) out.val_loss = entry->val_loss;
  }
  return out;
}

class torchtune_epoch final : public layout {
 public:
  std::string_view name() const override { return "torchtune"; }
  int specificity() const override { return torchtune_epoch_specificity; }
  bool reads_beside() const override { return true; }

  bool claims_name(std::string_view name, bool is_dir) const override {
    return is_dir && parse_folder(name).has_value();
  }

  recognition recognise(const candidate_view& c) const override {
    recognition r;
    const auto key = parse_folder(c.name());
    if (!c.is_dir() || !key) {
      r.problem = "not an epoch_<k> or step_<n> folder";
      return r;
    }
    if (key->is_epoch) {
      r.epoch = key->number;
    } else {
      r.step = key->number;
    }

    // Async saves: DCP, at the top level or (adapter only) in adapter_model/.
    for (const std::string_view dir : {std::string_view(), std::string_view("adapter_model")}) {
      const file_info* metadata = nullptr;
      const auto dcp = dcp_complete(c, dir, &metadata);
      if (!dcp) continue;
      if (!*dcp) return r;  // data written, .metadata not (yet) renamed into place
      r.verdict = state::complete;
      r.completed_at_ns = metadata->mtime_ns;
      r.fingerprint = "torchtune-dcp:" + std::string(dir) + ":" + std::to_string(metadata->size) +
                      ":" + std::to_string(metadata->mtime_ns);
      add_metrics(c, *key, r);
      return r;
    }

    std::vector<const file_info*> weights;
    bool adapters = false;
    for (const auto& f : c.files()) {
      if (f.is_dir || !is_weight_name(f.rel)) continue;
      weights.push_back(&f);
      adapters = adapters || is_adapter_weights(f.rel);
    }
    if (weights.empty()) return r;  // nothing saved yet: nothing is wrong
    if (auto p = weight_set_problem(c, weights); !p.empty()) {
      r.problem = std::move(p);
      return r;
    }
    if (adapters) {
      // Written after the adapter weights: LoRA checkpoints need it to load.
      const auto* config = find_file(c, adapter_config_file);
      if (!config || config->is_dir) return r;
      const auto text = read_small_file(c, *config, max_adapter_config_bytes, r.problem);
      if (!text) return r;
      json_arena arena;
      boost::system::error_code ec;
      const auto root = parse_python_json(*text, ec, arena.storage());
      if (ec || !root.is_object()) {
        r.problem = std::string(adapter_config_file) + ": not a JSON object yet";
        return r;
      }
    }
    if (const auto* state_file = find_file(c, recipe_state_file); state_file) {
      if (auto p = zip_problem(c, *state_file); !p.empty()) {
        r.problem = std::move(p);
        return r;
      }
    }

    r.verdict = state::settling;
    fingerprint_hash hash;
    std::size_t files = 0;
    for (const auto& f : c.files()) {
      if (f.is_dir) continue;
      hash.add(f);
      ++files;
      r.completed_at_ns = std::max(r.completed_at_ns, f.mtime_ns);
    }
    r.fingerprint = "torchtune:" + std::to_string(files) + ":" + hash.hex();
    add_metrics(c, *key, r);
    return r;
  }

 private:
  // Losses from the run's DiskLogger files in <output_dir>/logs/, newest
  // first (resumed runs start a new file), for step_<n> folders.
  static void add_metrics(const candidate_view& c, const folder_key& key, recognition& r) {
    if (key.is_epoch) return;
    auto logs = c.list_beside(0, log_folder);
    std::erase_if(logs, [](const file_info& f) {
      return f.is_dir || !f.rel.starts_with("log_") ||
             !(f.rel.ends_with(".txt") || f.rel.ends_with(".jsonl"));
    });
    // log_<unix seconds>: later runs sort later (same digit count until 2286).
    std::sort(logs.begin(), logs.end(), [](const file_info& a, const file_info& b) {
      return a.rel.size() != b.rel.size() ? a.rel.size() > b.rel.size() : a.rel > b.rel;
    });
    if (logs.size() > max_logs_read) logs.resize(max_logs_read);
    for (const auto& log : logs) {
      const std::uint64_t length = std::min(log.size, max_log_read_bytes);
      auto text =
          c.read_beside(0, std::string(log_folder) + "/" + log.rel, log.size - length, length);
      if (!text) continue;
      std::string_view body = *text;
      if (length < log.size) {  // started mid-line: skip to the first whole one
        const auto newline = body.find('\n');
        body = newline == std::string_view::npos ? std::string_view() : body.substr(newline + 1);
      }
      const auto losses = losses_up_to(body, key.number);
      if (!losses.any_at_or_before) continue;  // a later run's log: look further back
      std::string note;
      r.metrics = metrics_if_known(0, losses.loss, losses.val_loss, std::nullopt, note);
      if (!r.metrics && losses.loss && losses.val_loss) r.problem = note;  // not finite
      return;
    }
  }
};

}  // namespace

const layout& torchtune_epoch_layout() {
  static const torchtune_epoch instance;
  return instance;
}

}  // namespace ckptd::watcher
