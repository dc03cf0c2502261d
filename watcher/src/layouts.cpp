#include "layouts.hpp"

#include <algorithm>
#include <array>

namespace ckptd::watcher {

namespace {

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// NeMo's "<name>-v<k>.nemo": the previous .nemo, moved aside while the new
// one is written and deleted afterwards.
bool is_nemo_backup(std::string_view name) {
  constexpr std::string_view suffix = ".nemo";
  if (!ends_with(name, suffix)) return false;
  const auto stem = name.substr(0, name.size() - suffix.size());
  const auto v = stem.rfind("-v");
  if (v == std::string_view::npos || v == 0 || v + 2 == stem.size()) return false;
  const auto digits = stem.substr(v + 2);
  return std::all_of(digits.begin(), digits.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
}

}  // namespace

// In decreasing specificity. The order is the tie-break of choose_layout:
// earlier wins. Ties cannot happen today (the specificities differ), the
// order only keeps the choice deterministic should two ever be equal.
const std::vector<const layout*>& all_layouts() {
  static const std::vector<const layout*> layouts = {
      &manifest_layout(),
      &hf_trainer_layout(),
      &nemo_layout(),
      &megatron_layout(),
      &deepspeed_layout(),
      &dcp_layout(),
      &torchtune_epoch_layout(),
      &llama_stack_torchtune_layout(),
      &lightning_layout(),
      &orbax_layout(),
  };
  return layouts;
}

// Which names are staging or temporary. They are never checkpoints, and the
// engine does not descend into them.
//
//  - Names of in-progress saves that get renamed or deleted later:
//    "tmp-checkpoint-*" (HF Trainer 4.36-4.38.1 and early-2025 dev builds),
//    "*.orbax-checkpoint-tmp*" (Orbax, with or without a -<timestamp> or
//    -<counter> suffix), "*-unfinished" (NeMo's marker file while saving).
//  - Hidden names (a leading '.'). This covers ".nfs*" (NFS silly-renamed
//    files of a deleted-but-open file), ".metadata.tmp" (DCP's staging of
//    .metadata), rsync's and many editors' ".<name>.XXXXXX" temporaries, and
//    folders such as .git, .cache, .ipynb_checkpoints and .Trash-<uid>. No
//    trainer names a checkpoint with a leading dot. The one exception is
//    ".metadata", the file DCP (torch.distributed.checkpoint, torchtitan,
//    Megatron) renames into place LAST to complete a checkpoint: it is a
//    completion marker, not staging.
//  - Generic temporary suffixes ".tmp", ".partial", ".incomplete" (for
//    example a manifest written as ckptd-checkpoint.json.tmp and renamed).
//  - NeMo's "<name>-v<k>.nemo": the previous .nemo, moved aside before the
//    new one is written and deleted after it. (A model whose own name ends
//    in "-v<digits>" cannot be told apart and is not reported as a .nemo.)
//  - "", "." and "..", which are not names of anything.
bool is_staging_name(std::string_view name) {
  if (name.empty() || name == "." || name == "..") return true;
  if (name == ".metadata") return false;
  if (name.front() == '.') return true;
  if (starts_with(name, "tmp-checkpoint-")) return true;
  if (name.find(".orbax-checkpoint-tmp") != std::string_view::npos) return true;
  if (is_nemo_backup(name)) return true;
  static constexpr std::array<std::string_view, 4> staging_suffixes = {"-unfinished", ".tmp",
                                                                       ".partial", ".incomplete"};
  return std::any_of(staging_suffixes.begin(), staging_suffixes.end(),
                     [name](std::string_view suffix) { return ends_with(name, suffix); });
}

// The most specific layout claiming the name (rule 3 below), or nullptr.
static const layout* layout_by_name(std::string_view name, bool is_dir) {
  if (is_staging_name(name)) return nullptr;
  const layout* by_name = nullptr;
  for (const auto* l : all_layouts()) {
    const bool better = by_name == nullptr || l->specificity() > by_name->specificity();
    if (better && l->claims_name(name, is_dir)) by_name = l;
  }
  return by_name;
}

// The specificity rule:
//  1. A staging name (is_staging_name) belongs to no layout.
//  2. A folder that directly holds a layout's marker_file() belongs to that
//     layout, whatever its name: a marker is an explicit declaration by the
//     writer, so it beats any guess from the name. Two layouts have one:
//     ckptd's manifest (any trainer can override ckptd's reading of its
//     folder: a "checkpoint-400" holding a manifest is a manifest checkpoint)
//     and Orbax's _CHECKPOINT_METADATA (Orbax's "<prefix>_<N>" step names
//     overlap torchtune's "step_<n>" and Megatron's "iter_<n>"; the file
//     says whose it is). Among several markers, the highest specificity wins,
//     so the manifest beats Orbax. The engine only judges folders that some
//     layout claims by name (or that hold a manifest), so a marker decides
//     between claimants; it does not make new candidates.
//  3. Otherwise the layouts whose claims_name() accepts the name compete and
//     the highest specificity() wins. The full order, highest first, with
//     the names each claims and the overlaps the order settles:
//       100 manifest          (marker only, never by name)
//        30 hf-trainer        checkpoint-<N>
//        28 nemo              *.nemo; "<name>--<k>=<v>...ckpt" files and
//                             "<name>--<k>=<v>..." folders: beats Lightning
//                             (NeMo 1.x .ckpt files are also *.ckpt) and
//                             llama-stack torchtune (a NeMo folder could end
//                             in "-sft-<k>"); its "--" plus key=value pattern
//                             is the more specific one
//        26 megatron          iter_<7+ digits>, release: beats Orbax
//                             (<prefix>_<N> with prefix "iter"); "release"
//                             is a weak claim (rule 5)
//        25 deepspeed         global_step<N>
//        24 dcp               step-<N> (torchtitan)
//        22 torchtune         epoch_<k>, step_<n>: beats Orbax (prefixes
//                             "epoch" and "step"); Orbax still wins by its
//                             marker
//        20 llama-stack-torchtune  <model>-sft-<k>, <model>-dpo-<k>
//        15 lightning         *.ckpt files and folders: any name, hence below
//                             every pattern with more structure
//         5 orbax             <N> (zero padding allowed) and <prefix>_<N>
//                             for checkpoint-like prefixes (step, ckpt,
//                             checkpoint, epoch, iter): the most generic
//                             names of all, so the lowest; a bare number is
//                             reported only with Orbax's own completion
//                             files in it, and is a weak claim (rule 5)
//     Patterns not listed as overlapping are disjoint by construction
//     ("checkpoint-<digits>" cannot end in "-sft-<digits>").
//  4. Equal specificities are broken by the order of all_layouts(): earlier
//     wins.
const layout* choose_layout(std::string_view name, bool is_dir,
                            const std::vector<std::string>& direct_children) {
  if (is_staging_name(name)) return nullptr;
  const auto better = [](const layout* best, const layout* l) {
    return best == nullptr || l->specificity() > best->specificity();
  };
  const layout* by_marker = nullptr;
  if (is_dir) {
    for (const auto* l : all_layouts()) {
      const auto marker = l->marker_file();
      if (marker.empty() || !better(by_marker, l)) continue;
      if (std::find(direct_children.begin(), direct_children.end(), marker) !=
          direct_children.end()) {
        by_marker = l;
      }
    }
  }
  if (by_marker) return by_marker;
  return layout_by_name(name, is_dir);
}

// Weak claims, the rule that keeps a generic name from hiding checkpoints:
//  5. The claim on a name is that of the layout winning it by rule 3: weak
//     when that layout claims_weakly() (Orbax's bare numbers, Megatron's
//     "release"), else strong. The engine judges a weakly claimed folder as
//     a candidate like any other, but while its layout's verdict is
//     incomplete (no Orbax files in "0/", no tracker naming "release") it
//     also searches inside it as a plain folder: Hydra's multirun
//     "<job>/0/checkpoint-100/" is a Hugging Face checkpoint, not part of an
//     Orbax step. Once the layout judges the folder complete (or settling),
//     it is that layout's checkpoint and, as for strong claims, its inside is
//     not searched. A strongly claimed folder is never searched inside.
claim claim_of(std::string_view name, bool is_dir) {
  const layout* l = layout_by_name(name, is_dir);
  if (l == nullptr) return claim::none;
  return l->claims_weakly(name, is_dir) ? claim::weak : claim::strong;
}

bool search_inside(claim c, state verdict) {
  switch (c) {
    case claim::none:
      return true;
    case claim::weak:
      return verdict == state::incomplete;
    case claim::strong:
      return false;
  }
  return false;
}

}  // namespace ckptd::watcher
