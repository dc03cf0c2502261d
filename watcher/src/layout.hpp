#pragma once
// Checkpoint layouts: how each trainer's checkpoints look on disk and when
// they are complete. Pure logic: a layout sees a candidate only through a
// `candidate_view`, which the engine fills from disk and tests fill by hand.

#include <ckptd/store.hpp>

// For the engine's own folder listing (watcher.cpp's list_dir), beside
// view_from_disk's.
#include "dir_entries.hpp"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ckptd::watcher {

// One file or folder inside a candidate folder.
struct file_info {
  std::string rel;  // path relative to the candidate, '/'-separated: "adapter/adapter.pth"
  bool is_dir = false;
  std::uint64_t size = 0;
  std::int64_t mtime_ns = 0;  // ns since the Unix epoch
};

// A read-only look at one candidate: a folder (or, for file layouts, a file).
class candidate_view {
 public:
  virtual ~candidate_view() = default;
  // The candidate's own name (last path component), e.g. "checkpoint-400".
  virtual std::string_view name() const = 0;
  virtual bool is_dir() const = 0;
  // For a folder: everything inside it, up to a few levels deep, sorted by rel.
  // For a file: one entry with rel "" describing the file itself.
  virtual const std::vector<file_info>& files() const = 0;
  // Up to `length` bytes from `offset` of the file at `rel` ("" for the
  // candidate file itself). Fewer bytes when the file is shorter; nullopt when
  // it is missing or unreadable. Files are opened briefly and never held.
  virtual std::optional<std::string> read(std::string_view rel, std::uint64_t offset,
                                          std::uint64_t length) const = 0;
  // Up to `max_bytes` of a file beside the candidate, in its parent folder
  // (DeepSpeed's "latest", Megatron's tracker); nullopt when it is missing,
  // unreadable or larger.
  virtual std::optional<std::string> read_sibling(std::string_view name,
                                                  std::uint64_t max_bytes) const = 0;
  // Whether an entry of this name exists beside the candidate (NeMo's
  // "<name>-unfinished" marker).
  virtual bool sibling_exists(std::string_view name) const = 0;

  // Files further from the candidate, which a trainer writes into its run
  // folder rather than into the checkpoint: torchtune's DiskLogger files in
  // "logs/" beside epoch_<k>/, Lightning's CSVLogger "metrics.csv" beside the
  // checkpoints/ folder. `up` picks the base folder: 0 is the candidate's
  // parent, 1 the parent's parent; anything else is refused. `rel` is a
  // relative '/'-separated path below the base; "", ".", ".." components,
  // absolute paths and symlinks anywhere along it are refused, as in read().
  //
  // Up to `length` bytes from `offset` of the regular file at `rel`; fewer
  // when it is shorter, nullopt when it is missing, unreadable or refused.
  virtual std::optional<std::string> read_beside(int up, std::string_view rel, std::uint64_t offset,
                                                 std::uint64_t length) const {
    (void)up, (void)rel, (void)offset, (void)length;
    return std::nullopt;
  }
  // The regular files and folders directly inside the folder at `rel` ("" for
  // the base itself), sorted by name, each with rel = its name; at most a few
  // thousand. Empty when it is missing, unreadable or refused.
  virtual std::vector<file_info> list_beside(int up, std::string_view rel) const {
    (void)up, (void)rel;
    return {};
  }
};

enum class state : std::uint8_t {
  incomplete,  // not (yet) a usable checkpoint
  settling,    // complete once nothing under it changes for the settle time
  complete,    // its trainer considers it complete
};

struct recognition {
  state verdict = state::incomplete;
  std::string identifier;  // empty: the candidate's name
  std::int64_t epoch = 0;
  std::int64_t step = -1;
  std::optional<store::training_metrics> metrics;
  std::int64_t completed_at_ns = 0;  // from the disk: mtime of the completing file
  std::string fingerprint;           // changes when the checkpoint is rewritten in place
  std::string
      problem;  // why incomplete or why metrics are missing, for the log; empty if nothing is wrong
};

class layout {
 public:
  virtual ~layout() = default;
  virtual std::string_view name() const = 0;
  // When several layouts claim one candidate, the highest specificity wins
  // (see choose_layout in layouts.cpp for the rule).
  virtual int specificity() const = 0;
  // Does this layout claim a folder (or file) of this name, without looking inside?
  virtual bool claims_name(std::string_view name, bool is_dir) const = 0;
  // Is its claim on this (claimed) name weak? A weak claim is one on a name
  // so generic that other tools use it for folders of their own: Orbax's
  // bare step numbers ("0", "42": Hydra's multirun job folders, years,
  // seeds), Megatron's "release". The engine still judges such a folder,
  // but unless this layout finds it a checkpoint of its own it searches
  // inside it like any other folder (see search_inside in layouts.cpp).
  virtual bool claims_weakly(std::string_view name, bool is_dir) const {
    (void)name, (void)is_dir;
    return false;
  }
  // A file whose presence directly inside a folder makes the folder this
  // layout's candidate, whatever its name (ckptd's manifest). Empty if none.
  virtual std::string_view marker_file() const { return {}; }
  // Does a change of this file, beside a candidate of this layout (in the
  // same folder), possibly complete or break that candidate? DeepSpeed's
  // "latest", Megatron's latest_checkpointed_iteration.txt, NeMo's
  // "*-unfinished" markers. The engine then judges every candidate of that
  // folder again.
  virtual bool watches_sibling(std::string_view file_name) const {
    (void)file_name;
    return false;
  }
  // The names of the files beside a candidate of this name (in its parent
  // folder) that recognise() reads through read_sibling / sibling_exists, so
  // that its verdict can change while nothing inside the candidate does:
  // DeepSpeed's "latest", Megatron's tracker, NeMo's "<name>-unfinished".
  // A memo of a verdict is only valid while these (their size and mtime, or
  // their absence) are unchanged too. Empty for layouts that look only inside.
  virtual std::vector<std::string> sibling_inputs(std::string_view candidate_name,
                                                  bool is_dir) const {
    (void)candidate_name, (void)is_dir;
    return {};
  }
  // Whether recognise() reads files further from the candidate than its
  // sibling_inputs (read_beside / list_beside: torchtune's logs, Lightning's
  // metrics.csv), which no listing of the candidate covers. A verdict of such
  // a layout is never taken from the index after a restart: the files it read
  // may have changed while ckptd was down.
  virtual bool reads_beside() const { return false; }
  // Judges a claimed candidate from what is on disk.
  virtual recognition recognise(const candidate_view& c) const = 0;
};

// Every layout ckptd knows.
const std::vector<const layout*>& all_layouts();

// Staging and temporary names that are never checkpoints, nor searched:
// "tmp-checkpoint-*", "*.orbax-checkpoint-tmp*", ".nfs*", "*-unfinished", ...
bool is_staging_name(std::string_view name);

// How firmly a name makes a folder (or file) a candidate: not at all, weakly
// (the winning layout's claims_weakly), or strongly. Staging names: none.
enum class claim { none, weak, strong };
claim claim_of(std::string_view name, bool is_dir);

// Whether the engine searches inside a candidate for further checkpoints,
// given its claim and its layout's verdict: never inside a strongly claimed
// one, and inside a weakly claimed one only while it is not a checkpoint of
// its layout (incomplete: "0/" holding "checkpoint-100/" rather than Orbax's
// files). The rule is written down at claim_of in layouts.cpp.
bool search_inside(claim c, state verdict);

// The layout that owns a candidate of this name whose folder directly holds
// `direct_children` (names), or nullptr when none claims it.
const layout* choose_layout(std::string_view name, bool is_dir,
                            const std::vector<std::string>& direct_children);

// ckptd's own manifest file name.
inline constexpr std::string_view manifest_file = "ckptd-checkpoint.json";

}  // namespace ckptd::watcher

namespace ckptd::watcher {

// A candidate_view of a folder or file on disk. Lists the folder (lstat, no
// symlinks followed) up to `max_depth` levels and reads files on demand,
// opening each only for the read. nullptr when the path is gone or is not a
// folder or regular file. A string, not a std::filesystem::path: the engine
// holds its paths as strings, and building a path splits it into components
// (a cost per candidate) that the view almost never needs. `listings_end`:
// how the candidate's folder listings end (see filesystems.hpp).
std::unique_ptr<candidate_view> view_from_disk(std::string path, int max_depth = 3,
                                               listing_end listings_end = listing_end::empty_read);

}  // namespace ckptd::watcher
