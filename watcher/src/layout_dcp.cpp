// torch.distributed.checkpoint (DCP) folders as torchtitan names them:
//
//   <dump_folder>/checkpoint/
//     step-0/  step-500/          'step-{N}' (step-0 = the seed checkpoint)
//       __0_0.distcp __1_0.distcp ...   "__<rank>_<n>.distcp", each rank its own
//       .metadata                       pickled Metadata, by the coordinator, LAST
//     step-1000/                  last_save_in_hf: model-*.safetensors +
//                                 model.safetensors.index.json (index last)
//
// The coordinator writes ".metadata.tmp", fsyncs, and renames it to
// ".metadata" once every rank's data is written: the folder is complete when
// ".metadata" is there. Re-saving into an existing folder (overwrite=True is
// the default) keeps the OLD ".metadata" until that rename, so ".metadata"
// must also be at least as new as every ".distcp": an older one is stale and
// the folder is being rewritten. A folder saved in Hugging Face format
// instead is complete once its index and every shard it lists pass their
// checks (torchtitan's own loader accepts a step-N folder on the same two
// tests).
//
// step = N; no epoch (0) and no metrics: torchtitan writes them to
// TensorBoard only.

#include "formats.hpp"
#include "layouts.hpp"

#include <algorithm>

namespace ckptd::watcher {

namespace {

constexpr std::string_view folder_prefix = "step-";
constexpr std::string_view metadata_file = ".metadata";
constexpr std::string_view hf_index_file = "model.safetensors.index.json";

std::optional<std::int64_t> folder_step(std::string_view name) {
  if (!name.starts_with(folder_prefix)) return std::nullopt;
  return parse_decimal(name.substr(folder_prefix.size()), /*allow_padding=*/false);
}

class dcp final : public layout {
 public:
  std::string_view name() const override { return "dcp"; }
  int specificity() const override { return dcp_specificity; }

  bool claims_name(std::string_view name, bool is_dir) const override {
    return is_dir && folder_step(name).has_value();
  }

  recognition recognise(const candidate_view& c) const override {
    recognition r;
    const auto step = folder_step(c.name());
    if (!c.is_dir() || !step) {
      r.problem = "not a step-<N> folder";
      return r;
    }
    r.step = *step;

    const auto* metadata = find_file(c, metadata_file);
    if (metadata && !metadata->is_dir) {
      std::int64_t newest_data_ns = 0;
      std::size_t data_files = 0;
      for (const auto& f : c.files()) {
        if (f.is_dir || f.rel.find('/') != std::string::npos || !f.rel.ends_with(".distcp")) {
          continue;
        }
        ++data_files;
        newest_data_ns = std::max(newest_data_ns, f.mtime_ns);
      }
      if (metadata->size == 0) {
        r.problem = std::string(metadata_file) + " is empty; damaged?";
        return r;
      }
      if (data_files == 0) {
        r.problem = std::string(metadata_file) + " without any .distcp data file";
        return r;
      }
      if (metadata->mtime_ns < newest_data_ns) return r;  // stale: being saved over
      r.verdict = state::complete;
      r.completed_at_ns = metadata->mtime_ns;
      r.fingerprint =
          "dcp:" + std::to_string(metadata->size) + ":" + std::to_string(metadata->mtime_ns);
      return r;
    }

    if (const auto* index = find_file(c, hf_index_file); index && !index->is_dir) {
      if (auto p = index_problem(c, *index); !p.empty()) {
        r.problem = std::move(p);
        return r;
      }
      r.verdict = state::complete;
      r.completed_at_ns = index->mtime_ns;
      r.fingerprint =
          "dcp-hf:" + std::to_string(index->size) + ":" + std::to_string(index->mtime_ns);
      return r;
    }
    return r;  // data still being written: nothing is wrong yet
  }
};

}  // namespace

const layout& dcp_layout() {
  static const dcp instance;
  return instance;
}

}  // namespace ckptd::watcher
