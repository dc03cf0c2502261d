// Orbax (JAX) CheckpointManager step folders:
//
//   <directory>/
//     1000/                        the step; "<prefix>_1000" with step_prefix; zero padding
//     optional
//       _CHECKPOINT_METADATA       JSON: item_handlers, metrics, init_timestamp_nsecs,
//                                  commit_timestamp_nsecs, custom_metadata, ...
//       default/ | state/ | <item>/   one folder per item (_METADATA, manifest.ocdbt, d/ ...)
//       metrics/metrics            JSON, when save(..., metrics=...) is used
//       commit_success.txt         CommitFile protocol; every back-end since 0.12.3
//     2000.orbax-checkpoint-tmp/   in progress (a staging name: never judged)
//
// Two protocols. AtomicRename (the default off GCS) writes into the tmp
// folder, sets commit_timestamp_nsecs in _CHECKPOINT_METADATA, and renames
// the folder to its final name; CommitFile (gs:// and similar) writes into
// the final folder and finishes with commit_success.txt. So a step folder is
// complete when commit_success.txt is there, or when _CHECKPOINT_METADATA
// parses and holds commit_timestamp_nsecs. Releases older than
// _CHECKPOINT_METADATA only renamed: a folder without it whose item folders
// hold Orbax's own files (_METADATA, manifest.ocdbt) is settling.
//
// A bare number is the most generic name of all ("2024", "0", "42"): this
// layout has the lowest specificity, and a numeric folder without one of the
// signals above is incomplete, quietly, for ever. Conversely,
// _CHECKPOINT_METADATA is this layout's marker: a folder holding it is
// Orbax's whatever its name ("step_100" is torchtune's only without it).
//
// Names claimed: a number (zero padding allowed), or "<prefix>_<N>" for the
// prefixes in claimed_prefixes (see there why not any prefix).
//
// step: the number at the end of the name (-1 when the folder was claimed
// by the marker under a name without one). epoch: the "epoch" metric when the user saved one,
// else 0. Metrics: metrics/metrics and the "metrics" of
// _CHECKPOINT_METADATA (the file wins), keys by role_of_metric ("loss",
// "train_loss", "eval_loss", "val_loss", ...). created_at: the commit
// timestamp when present.

#include "formats.hpp"
#include "layouts.hpp"

#include <boost/json/value.hpp>

#include <algorithm>
#include <array>
#include <cmath>

namespace ckptd::watcher {

namespace {

constexpr std::string_view commit_file = "commit_success.txt";
constexpr std::string_view metrics_file = "metrics/metrics";
constexpr std::uint64_t max_metadata_bytes = 16ull << 20;
constexpr std::uint64_t max_metrics_bytes = 4ull << 20;

// step_prefix values claimed by name. Orbax accepts any prefix, but the
// engine neither descends into a folder it treats as a candidate nor looks
// for checkpoints inside one, and "<word>_<N>" is how many tools name their
// own folders (Lightning's "version_0", sweeps' "run_3", "trial_7",
// "seed_42"): claiming them all would hide every checkpoint below them. So
// only prefixes that name checkpoints are claimed; an Orbax folder with
// another prefix is still recognised when another layout claims its name
// and its _CHECKPOINT_METADATA marker is there.
constexpr std::array<std::string_view, 5> claimed_prefixes = {"step", "ckpt", "checkpoint", "epoch",
                                                              "iter"};

// "1000", "0001000", or "<prefix>_1000" (zero padding allowed).
std::optional<std::int64_t> step_of(std::string_view name) {
  if (auto n = parse_decimal(name, /*allow_padding=*/true)) return n;
  const auto underscore = name.rfind('_');
  if (underscore == std::string_view::npos || underscore == 0) return std::nullopt;
  return parse_decimal(name.substr(underscore + 1), /*allow_padding=*/true);
}

bool is_claimed_name(std::string_view name) {
  if (parse_decimal(name, /*allow_padding=*/true)) return true;
  const auto underscore = name.rfind('_');
  if (underscore == std::string_view::npos || !step_of(name)) return false;
  const auto prefix = name.substr(0, underscore);
  return std::find(claimed_prefixes.begin(), claimed_prefixes.end(), prefix) !=
         claimed_prefixes.end();
}

// An item folder of a pre-metadata Orbax save: one level down, Orbax's own
// PyTree files.
bool has_legacy_item(const candidate_view& c) {
  return std::any_of(c.files().begin(), c.files().end(), [](const file_info& f) {
    const auto slash = f.rel.find('/');
    if (f.is_dir || slash == std::string::npos || slash == 0) return false;
    if (f.rel.find('/', slash + 1) != std::string::npos) return false;
    const auto file = std::string_view(f.rel).substr(slash + 1);
    return file == "_METADATA" || file == "manifest.ocdbt";
  });
}

// The object's memory comes from `sp`: the caller's arena must outlive it.
std::optional<boost::json::object> read_json_object(const candidate_view& c, const file_info& f,
                                                    std::uint64_t max_bytes, std::string& problem,
                                                    boost::json::storage_ptr sp) {
  const auto text = read_small_file(c, f, max_bytes, problem);
  if (!text) return std::nullopt;
  boost::system::error_code ec;
  auto root = parse_python_json(*text, ec, std::move(sp));
  if (ec || !root.is_object()) {
    problem = f.rel + ": not a JSON object; truncated or still being written";
    return std::nullopt;
  }
  return std::move(root.as_object());
}

class orbax final : public layout {
 public:
  std::string_view name() const override { return "orbax"; }
  int specificity() const override { return orbax_specificity; }
  bool claims_name(std::string_view name, bool is_dir) const override {
    return is_dir && is_claimed_name(name);
  }
  // A bare number names Hydra's multirun jobs, seeds and years as often as
  // Orbax steps; "<prefix>_<N>" with a checkpoint-like prefix does not.
  bool claims_weakly(std::string_view name, bool is_dir) const override {
    return is_dir && parse_decimal(name, /*allow_padding=*/true).has_value();
  }
  std::string_view marker_file() const override { return orbax_metadata_file; }

  recognition recognise(const candidate_view& c) const override {
    recognition r;
    if (!c.is_dir()) {
      r.problem = "an Orbax checkpoint is a folder";
      return r;
    }
    r.step = step_of(c.name()).value_or(-1);

    const auto* commit = find_file(c, commit_file);
    if (commit && commit->is_dir) commit = nullptr;
    const auto* metadata_file = find_file(c, orbax_metadata_file);
    if (metadata_file && metadata_file->is_dir) metadata_file = nullptr;

    json_arena arena;  // outlives metadata
    std::optional<boost::json::object> metadata;
    std::string metadata_problem;
    if (metadata_file) {
      metadata = read_json_object(c, *metadata_file, max_metadata_bytes, metadata_problem,
                                  arena.storage());
    }
    std::int64_t commit_ns = 0;
    if (metadata) {
      if (const auto* v = metadata->if_contains("commit_timestamp_nsecs")) {
        commit_ns = json_integer(*v).value_or(0);
      }
    }

    fingerprint_hash hash;
    if (commit) {
      hash.add(*commit);
      if (metadata_file) hash.add(*metadata_file);
      r.verdict = state::complete;
      r.completed_at_ns = commit_ns > 0 ? commit_ns : commit->mtime_ns;
    } else if (metadata_file) {
      if (!metadata) {
        r.problem = std::move(metadata_problem);
        return r;
      }
      if (commit_ns <= 0) return r;  // committed neither way yet: in progress
      hash.add(*metadata_file);
      r.verdict = state::complete;
      r.completed_at_ns = commit_ns;
    } else if (has_legacy_item(c)) {
      r.verdict = state::settling;
      for (const auto& f : c.files()) {
        if (f.is_dir) continue;
        hash.add(f);
        r.completed_at_ns = std::max(r.completed_at_ns, f.mtime_ns);
      }
    } else {
      return r;  // a plain numeric folder, or a save that has not begun
    }
    r.fingerprint = "orbax:" + hash.hex();
    add_metrics(c, metadata, r);
    return r;
  }

 private:
  static void add_metrics(const candidate_view& c, const std::optional<boost::json::object>& meta,
                          recognition& r) {
    std::array<std::optional<double>, 3> losses;  // by metric_role - 1
    std::optional<std::int64_t> epoch;
    const auto take = [&](const boost::json::object& metrics) {
      for (const auto& [key, value] : metrics) {
        if (key == "epoch" && !epoch) {
          const auto number = json_number(value);
          if (number && *number >= 0 && *number < 1e15 && std::trunc(*number) == *number) {
            epoch = static_cast<std::int64_t>(*number);
          }
          continue;
        }
        const auto role = role_of_metric(key);
        if (role == metric_role::none) continue;
        auto& slot = losses[static_cast<std::size_t>(role) - 1];
        if (slot) continue;  // an earlier source (metrics/metrics) wins
        // Python's NaN reads as null: present, but not a usable number.
        slot = value.is_null() ? std::nan("") : json_number(value).value_or(std::nan(""));
      }
    };
    if (const auto* f = find_file(c, metrics_file); f && !f->is_dir) {
      std::string ignored;
      json_arena arena;
      if (auto obj = read_json_object(c, *f, max_metrics_bytes, ignored, arena.storage())) {
        take(*obj);
      }
    }
    if (meta) {
      if (const auto* m = meta->if_contains("metrics"); m && m->is_object()) take(m->as_object());
    }
    r.epoch = epoch.value_or(0);
    std::string note;
    const auto& train = losses[0];
    const auto& validation = losses[1];
    r.metrics = metrics_if_known(r.epoch, train, validation, losses[2], note);
    if (!r.metrics && train && validation) r.problem = std::move(note);
  }
};

}  // namespace

const layout& orbax_layout() {
  static const orbax instance;
  return instance;
}

}  // namespace ckptd::watcher
