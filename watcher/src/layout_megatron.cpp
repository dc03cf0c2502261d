// Megatron-LM checkpoints (megatron/training/checkpointing.py):
//
//   <save>/
//     latest_checkpointed_iteration.txt   <- "1500" or "release"; rewritten in place
//     iter_0001500/                       <- 'iter_{:07d}'
//       __0_0.distcp ... .metadata        torch_dist format (the default): PyTorch DCP
//       metadata.json                     Megatron's dist-ckpt config, written after the data
//       (legacy "torch" format: mp_rank_00/model_optim_rng.pt, mp_rank_TT_PPP/ with
//        pipeline parallelism)
//     release/                            same content, for converted/released weights
//
// Order: data and .metadata, then metadata.json (rank 0), a barrier, then
// rank 0 rewrites the tracker. So iter_N is complete once the tracker holds
// an integer >= N (older iterations stay complete; the retention policy
// deletes them outright) and iter_N/metadata.json is there and parses, or,
// in the legacy format, every mp_rank_*/model_optim_rng.pt passes the ZIP
// check. release/ is complete when the tracker says "release". A folder
// beyond the tracker is a save in progress, or one a restarted job is
// overwriting.
//
// step = N (none for release/); no epoch (0) and no metrics: Megatron writes
// them to TensorBoard / W&B only.

#include "formats.hpp"
#include "layouts.hpp"

#include <boost/json/value.hpp>

#include <algorithm>

namespace ckptd::watcher {

namespace {

constexpr std::string_view iteration_prefix = "iter_";
constexpr std::size_t iteration_digits = 7;
constexpr std::string_view release_name = "release";
constexpr std::string_view tracker_file = "latest_checkpointed_iteration.txt";
constexpr std::string_view dist_metadata_file = "metadata.json";
constexpr std::string_view legacy_weights_name = "model_optim_rng.pt";
constexpr std::uint64_t max_tracker_bytes = 256;
constexpr std::uint64_t max_metadata_bytes = 1ull << 20;

// "iter_<N>" as 'iter_{:07d}' formats it: exactly 7 digits (zero padded),
// or more without leading zeros once N reaches 10^7.
std::optional<std::int64_t> iteration_of(std::string_view name) {
  if (!name.starts_with(iteration_prefix)) return std::nullopt;
  const auto digits = name.substr(iteration_prefix.size());
  if (digits.size() < iteration_digits) return std::nullopt;
  return parse_decimal(digits, /*allow_padding=*/digits.size() == iteration_digits);
}

// "mp_rank_00/model_optim_rng.pt", "mp_rank_01_002/model_optim_rng.pt".
bool is_legacy_weights(std::string_view rel) {
  const auto slash = rel.find('/');
  if (slash == std::string_view::npos) return false;
  return rel.substr(0, slash).starts_with("mp_rank_") &&
         rel.substr(slash + 1) == legacy_weights_name;
}

class megatron final : public layout {
 public:
  std::string_view name() const override { return "megatron"; }
  int specificity() const override { return megatron_specificity; }

  bool claims_name(std::string_view name, bool is_dir) const override {
    return is_dir && (name == release_name || iteration_of(name).has_value());
  }

  // "release" is any release folder (of a model, of a package) unless the
  // tracker beside it says so.
  bool claims_weakly(std::string_view name, bool is_dir) const override {
    return is_dir && name == release_name;
  }

  bool watches_sibling(std::string_view file_name) const override {
    return file_name == tracker_file;
  }

  std::vector<std::string> sibling_inputs(std::string_view, bool) const override {
    return {std::string(tracker_file)};
  }

  recognition recognise(const candidate_view& c) const override {
    recognition r;
    const bool release = c.name() == release_name;
    const auto iteration = iteration_of(c.name());
    if (!c.is_dir() || (!release && !iteration)) {
      r.problem = "not an iter_<7 digits> or release folder";
      return r;
    }
    if (iteration) r.step = *iteration;

    const auto tracker = c.read_sibling(tracker_file, max_tracker_bytes);
    if (!tracker) {
      if (c.sibling_exists(tracker_file)) {
        r.problem = std::string(tracker_file) + ": unreadable, or too large to be a tracker";
      }
      return r;  // the first save is still in progress
    }
    const auto text = trim_ascii(*tracker);
    if (text.empty()) return r;  // being rewritten: judged again on its close
    if (text == release_name) {
      if (!release) {
        r.problem = std::string(tracker_file) + " says release; iterations are not tracked";
        return r;
      }
    } else {
      const auto tracked = parse_decimal(text, /*allow_padding=*/true);
      if (!tracked) {
        r.problem = std::string(tracker_file) + ": \"" + std::string(text.substr(0, 32)) +
                    "\" is neither an iteration nor \"release\"";
        return r;
      }
      if (release || *tracked < *iteration) return r;  // saved beyond the tracker: in progress
    }

    if (const auto* meta = find_file(c, dist_metadata_file); meta && !meta->is_dir) {
      const auto body = read_small_file(c, *meta, max_metadata_bytes, r.problem);
      if (!body) return r;
      json_arena arena;
      boost::system::error_code ec;
      const auto root = parse_python_json(*body, ec, arena.storage());
      if (ec || !root.is_object()) {
        r.problem = std::string(dist_metadata_file) + ": not a JSON object; damaged?";
        return r;
      }
      r.verdict = state::complete;
      r.completed_at_ns = meta->mtime_ns;
      r.fingerprint =
          "megatron:" + std::to_string(meta->size) + ":" + std::to_string(meta->mtime_ns);
      return r;
    }

    std::vector<const file_info*> legacy;
    for (const auto& f : c.files()) {
      if (!f.is_dir && is_legacy_weights(f.rel)) legacy.push_back(&f);
    }
    if (legacy.empty()) {
      r.problem = "the tracker has reached this iteration, but it holds neither " +
                  std::string(dist_metadata_file) + " nor mp_rank_*/" +
                  std::string(legacy_weights_name);
      return r;
    }
    complete_when_whole_zips(c, legacy, "megatron-legacy", r);
    return r;
  }
};

}  // namespace

const layout& megatron_layout() {
  static const megatron instance;
  return instance;
}

}  // namespace ckptd::watcher
