// Fuzz target: every layout recogniser on a candidate folder (or file) built
// in memory from the input: its name, the names, kinds, sizes, mtimes and
// contents of what is inside it (trainer_state.json, manifests, weight
// headers, logs, tag files), and files beside it. See candidate_text.hpp for
// the input's form.
//
// The view keeps the contract the engine's disk view keeps (files() sorted by
// rel, parent folders listed, no "", "." or ".." components), so a crash here
// is a crash the real engine could meet. For each layout that claims the
// candidate, or that choose_layout() picks, recognise() runs, and what it
// reports is turned into the API's JSON body, which must parse.

#include "candidate_text.hpp"

#include "artifacts_json.hpp"
#include "layout.hpp"

#include <boost/json/parse.hpp>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

namespace w = ckptd::watcher;
using ckptd::fuzz::record_mark;

// Inputs describing more entries than this are cut (the disk view caps its
// listing too).
constexpr std::size_t max_entries = 256;

// A relative path as the disk view produces it: '/'-separated components,
// none empty, "." or "..".
bool valid_rel(std::string_view rel) {
  if (rel.empty()) return false;
  std::size_t start = 0;
  for (;;) {
    const std::size_t slash = rel.find('/', start);
    const std::string_view part = rel.substr(start, slash - start);
    if (part.empty() || part == "." || part == "..") return false;
    if (slash == std::string_view::npos) return true;
    start = slash + 1;
  }
}

std::vector<std::string_view> split_words(std::string_view line) {
  std::vector<std::string_view> words;
  std::size_t start = 0;
  while (start < line.size()) {
    const std::size_t space = line.find(' ', start);
    const std::size_t end = space == std::string_view::npos ? line.size() : space;
    if (end > start) words.push_back(line.substr(start, end - start));
    start = end + 1;
  }
  return words;
}

template <class Int>
std::optional<Int> number(std::string_view text) {
  Int value{};
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

class fuzz_view final : public w::candidate_view {
 public:
  explicit fuzz_view(std::string_view input) {
    std::vector<std::string_view> pieces;
    std::size_t start = 0;
    for (;;) {
      const std::size_t mark = input.find(record_mark, start);
      pieces.push_back(input.substr(start, mark - start));
      if (mark == std::string_view::npos || pieces.size() > max_entries) break;
      start = mark + record_mark.size();
    }
    const std::string_view first = pieces.front().substr(0, pieces.front().find('\n'));
    is_dir_ = first.substr(0, 2) != "f ";
    name_ = first.size() >= 2 ? std::string(first.substr(2)) : std::string();

    std::int64_t next_mtime = 1'700'000'000'000'000'000;
    for (std::size_t i = 1; i < pieces.size(); ++i) {
      const std::string_view piece = pieces[i];
      const std::size_t eol = piece.find('\n');
      const auto words = split_words(piece.substr(0, eol));
      const std::string_view content =
          eol == std::string_view::npos ? std::string_view() : piece.substr(eol + 1);
      if (words.size() < 2) continue;
      next_mtime += 1'000'000;
      const auto mtime_at = [&](std::size_t k) {
        return words.size() > k ? number<std::int64_t>(words[k]).value_or(next_mtime) : next_mtime;
      };
      const std::string_view kind = words[0];
      if (kind == "F" || kind == "D") {
        const bool dir = kind == "D";
        if (!is_dir_) {
          // A file candidate is one entry, rel "": the first F record.
          if (dir || !files_.empty()) continue;
          add_entry("", false, content, mtime_at(2), words);
          continue;
        }
        if (!valid_rel(words[1])) continue;
        add_entry(std::string(words[1]), dir, content, mtime_at(2), words);
      } else if (kind == "S") {
        if (words[1].find('/') != std::string_view::npos) continue;
        siblings_.emplace(std::string(words[1]), std::string(content));
      } else if (kind == "B" && words.size() >= 3) {
        const auto up = number<int>(words[1]);
        if (!up || (*up != 0 && *up != 1) || !valid_rel(words[2])) continue;
        beside_.emplace(std::make_pair(*up, std::string(words[2])),
                        w::file_info{std::string(words[2]), false,
                                     static_cast<std::uint64_t>(content.size()), mtime_at(3)});
        beside_bytes_.emplace(std::make_pair(*up, std::string(words[2])), std::string(content));
      }
    }
    std::sort(files_.begin(), files_.end(),
              [](const w::file_info& a, const w::file_info& b) { return a.rel < b.rel; });
  }

  std::string_view name() const override { return name_; }
  bool is_dir() const override { return is_dir_; }
  const std::vector<w::file_info>& files() const override { return files_; }

  std::optional<std::string> read(std::string_view rel, std::uint64_t offset,
                                  std::uint64_t length) const override {
    const auto it = contents_.find(std::string(rel));
    if (it == contents_.end()) return std::nullopt;
    return slice(it->second, offset, length);
  }
  std::optional<std::string> read_sibling(std::string_view name,
                                          std::uint64_t max_bytes) const override {
    const auto it = siblings_.find(std::string(name));
    if (it == siblings_.end() || it->second.size() > max_bytes) return std::nullopt;
    return it->second;
  }
  bool sibling_exists(std::string_view name) const override {
    return siblings_.contains(std::string(name));
  }
  std::optional<std::string> read_beside(int up, std::string_view rel, std::uint64_t offset,
                                         std::uint64_t length) const override {
    if ((up != 0 && up != 1) || !valid_rel(rel)) return std::nullopt;
    const auto it = beside_bytes_.find(std::make_pair(up, std::string(rel)));
    if (it == beside_bytes_.end()) return std::nullopt;
    return slice(it->second, offset, length);
  }
  std::vector<w::file_info> list_beside(int up, std::string_view rel) const override {
    std::vector<w::file_info> out;
    if ((up != 0 && up != 1) || (!rel.empty() && !valid_rel(rel))) return out;
    const std::string prefix = rel.empty() ? std::string() : std::string(rel) + "/";
    std::set<std::string> dirs_seen;
    for (const auto& [key, info] : beside_) {
      if (key.first != up || key.second.compare(0, prefix.size(), prefix) != 0) continue;
      const std::string rest = key.second.substr(prefix.size());
      const std::size_t slash = rest.find('/');
      if (slash == std::string::npos) {
        out.push_back(w::file_info{rest, false, info.size, info.mtime_ns});
      } else if (dirs_seen.insert(rest.substr(0, slash)).second) {
        out.push_back(w::file_info{rest.substr(0, slash), true, 0, info.mtime_ns});
      }
    }
    std::sort(out.begin(), out.end(),
              [](const w::file_info& a, const w::file_info& b) { return a.rel < b.rel; });
    return out;
  }

  std::vector<std::string> direct_children() const {
    std::vector<std::string> names;
    for (const auto& f : files_) {
      if (!f.rel.empty() && f.rel.find('/') == std::string::npos) names.push_back(f.rel);
    }
    return names;
  }

 private:
  static std::string slice(const std::string& bytes, std::uint64_t offset, std::uint64_t length) {
    if (offset >= bytes.size()) return std::string();
    return bytes.substr(static_cast<std::size_t>(offset),
                        static_cast<std::size_t>(std::min<std::uint64_t>(length, bytes.size())));
  }

  void add_entry(const std::string& rel, bool dir, std::string_view content, std::int64_t mtime,
                 const std::vector<std::string_view>& words) {
    if (contents_.contains(rel) || dirs_.contains(rel)) return;  // first one wins
    // The disk view lists every folder on the way down.
    for (std::size_t slash = rel.find('/'); slash != std::string::npos;
         slash = rel.find('/', slash + 1)) {
      const std::string parent = rel.substr(0, slash);
      if (contents_.contains(parent)) return;  // a file cannot hold anything
      if (dirs_.insert(parent).second) files_.push_back(w::file_info{parent, true, 0, mtime});
    }
    if (dir) {
      dirs_.insert(rel);
      files_.push_back(w::file_info{rel, true, 0, mtime});
      return;
    }
    // "@@ F rel mtime size": a listed size unlike the contents' own.
    std::uint64_t size = content.size();
    if (words.size() > 3) {
      if (auto listed = number<std::uint64_t>(words[3])) size = *listed;
    }
    files_.push_back(w::file_info{rel, false, size, mtime});
    contents_.emplace(rel, std::string(content));
  }

  std::string name_;
  bool is_dir_ = true;
  std::vector<w::file_info> files_;
  std::map<std::string, std::string> contents_;
  std::set<std::string> dirs_;
  std::map<std::string, std::string> siblings_;
  std::map<std::pair<int, std::string>, w::file_info> beside_;
  std::map<std::pair<int, std::string>, std::string> beside_bytes_;
};

[[noreturn]] void invariant_failed(const char* what, const std::string& detail) {
  std::fprintf(stderr, "invariant failed: %s: %.300s\n", what, detail.c_str());
  std::abort();
}

// What the engine does with a verdict: a checkpoint record, then the API's body.
void publish(const fuzz_view& view, const w::recognition& r) {
  if (r.verdict != w::state::incomplete && r.verdict != w::state::settling &&
      r.verdict != w::state::complete) {
    invariant_failed("verdict out of range", std::string(view.name()));
  }
  if (r.verdict != w::state::complete) return;
  ckptd::store::checkpoint c;
  c.identifier = r.identifier.empty() ? std::string(view.name()) : r.identifier;
  c.path = "/runs/job/" + std::string(view.name());
  c.epoch = r.epoch;
  c.step = r.step;
  c.created_at_ns = r.completed_at_ns;
  c.metrics = r.metrics;
  c.fingerprint = r.fingerprint;
  ckptd::api::job_status status;
  status.status = "in_progress";
  const auto bodies = ckptd::api::job_json("job", {c}, status);
  boost::system::error_code ec;
  const auto value = boost::json::parse(bodies.artifacts, ec);
  if (ec || !value.is_object()) invariant_failed("artifacts body does not parse", bodies.artifacts);
  (void)boost::json::parse(bodies.status, ec);
  if (ec) invariant_failed("status body does not parse", bodies.status);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const fuzz_view view(std::string_view(reinterpret_cast<const char*>(data), size));
  const std::string_view name = view.name();
  (void)w::is_staging_name(name);
  const w::layout* chosen = w::choose_layout(name, view.is_dir(), view.direct_children());
  for (const w::layout* l : w::all_layouts()) {
    (void)l->watches_sibling(name);
    (void)l->sibling_inputs(name, view.is_dir());
    if (l == chosen || l->claims_name(name, view.is_dir())) publish(view, l->recognise(view));
  }
  return 0;
}
