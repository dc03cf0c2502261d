// Writes fuzz_layouts' seed corpus from the test fixtures: each trainer's
// checkpoint folder as tests/support/fixtures.cpp writes it (complete, half
// written, truncated), turned into the text form of candidate_text.hpp.
//
//   fuzz_make_layout_seeds tests/fuzz/corpus/layouts

#include "candidate_text.hpp"
#include "support/fixtures.hpp"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using namespace ckptd::test;

namespace {

// Files larger than this are cut in the seed (and listed with their real size).
constexpr std::uintmax_t max_seed_file_bytes = 4096;

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::int64_t mtime_ns(const fs::path& p) {
  const auto t = fs::last_write_time(p);
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::file_clock::to_sys(t).time_since_epoch())
      .count();
}

// The candidate folder `dir` in the text form, with `siblings` (name, bytes)
// beside it and `beside` (up, rel, bytes) further up.
std::string candidate_text(const fs::path& dir,
                           const std::vector<std::pair<std::string, std::string>>& siblings = {}) {
  std::string out = "d " + dir.filename().string();
  std::vector<fs::path> entries;
  for (const auto& e : fs::recursive_directory_iterator(dir)) entries.push_back(e.path());
  std::sort(entries.begin(), entries.end());
  for (const auto& p : entries) {
    const std::string rel = fs::relative(p, dir).generic_string();
    if (fs::is_directory(p)) {
      out += "\n@@ D " + rel + " " + std::to_string(mtime_ns(p)) + "\n";
      continue;
    }
    std::string bytes = read_all(p);
    out += "\n@@ F " + rel + " " + std::to_string(mtime_ns(p));
    if (bytes.size() > max_seed_file_bytes) {
      out += " " + std::to_string(bytes.size());
      bytes.resize(max_seed_file_bytes);
    }
    out += "\n" + bytes;
  }
  for (const auto& [name, bytes] : siblings) out += "\n@@ S " + name + "\n" + bytes;
  return out;
}

void write_seed(const fs::path& out_dir, const std::string& name, const std::string& text) {
  std::ofstream(out_dir / name, std::ios::binary) << text;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: fuzz_make_layout_seeds OUT_DIR\n";
    return 2;
  }
  const fs::path out_dir = argv[1];
  fs::create_directories(out_dir);
  temp_dir tmp("ckptd-seeds");

  {  // Hugging Face Trainer: complete, before trainer_state.json, truncated, PEFT.
    hf_run run(tmp / "hf", {.steps_per_epoch = 20, .logging_steps = 5});
    run.save(20);
    write_seed(out_dir, "hf-complete", candidate_text(run.checkpoint_dir(20)));
    run.begin_save(40);
    write_seed(out_dir, "hf-no-state", candidate_text(run.checkpoint_dir(40)));
    run.write_truncated_trainer_state(120);
    write_seed(out_dir, "hf-truncated-state", candidate_text(run.checkpoint_dir(40)));
    run.finish_save();
    write_seed(out_dir, "hf-second-save", candidate_text(run.checkpoint_dir(40)));

    hf_run peft(tmp / "peft", {.steps_per_epoch = 10, .with_eval = false, .peft = true,
                               .nan_loss_from_step = 10});
    peft.save(10);
    write_seed(out_dir, "hf-peft-nan-loss", candidate_text(peft.checkpoint_dir(10)));
  }
  {  // llama-stack torchtune: log only, meta weights, Hugging Face weights.
    torchtune_run meta(tmp / "tt-meta");
    const auto epoch0 = meta.begin_epoch("Llama3.2-3B-Instruct", 0);
    write_seed(out_dir, "torchtune-log-only", candidate_text(epoch0));
    meta.finish_epoch();
    write_seed(out_dir, "torchtune-meta", candidate_text(epoch0));

    torchtune_run hf(tmp / "tt-hf", {.algorithm = "dpo", .format = torchtune_format::huggingface});
    hf.begin_epoch("Llama3.2-1B", 2);
    write_seed(out_dir, "torchtune-hf", candidate_text(hf.finish_epoch()));
  }
  {  // ckptd's manifest: every field, none, malformed.
    write_seed(out_dir, "manifest-full",
               candidate_text(write_manifest_checkpoint(
                   tmp / "m" / "final",
                   {.identifier = "final-model", .epoch = 3, .step = 1200, .train_loss = 1.21,
                    .validation_loss = 1.35, .perplexity = 3.86})));
    write_seed(out_dir, "manifest-empty",
               candidate_text(write_manifest_checkpoint(tmp / "m" / "checkpoint-7")));
    write_seed(out_dir, "manifest-malformed",
               candidate_text(write_manifest_checkpoint_raw(tmp / "m" / "broken", "{ not json")));
  }
  {  // A lone weight file as a file candidate.
    write_file(tmp / "w" / "model.safetensors", safetensors_bytes(2, 4));
    write_seed(out_dir, "file-safetensors",
               "f model.safetensors\n@@ F - 1700000000000000000\n" + safetensors_bytes(2, 4));
  }
  return 0;
}
