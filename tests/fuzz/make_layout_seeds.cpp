// Writes fuzz_layouts' seed corpus from the test fixtures: each trainer's
// checkpoint folder as tests/support/fixtures.cpp writes it (complete, half
// written, truncated), with the files beside it, turned into the text form
// of candidate_text.hpp. Rerun it when a layout or its fixture is added.
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

// The scratch folder the scenarios write into.
fs::path scratch_root;

// Appends `base`'s regular files up to two levels deep (but not `skip`'s
// subtree) as "@@ B up rel" records: what read_beside() may look at.
void append_beside(std::string& out, const fs::path& base, int up, const fs::path& skip) {
  // Each scenario has its own folder in the scratch folder; nothing above it.
  const std::string below = fs::relative(base, scratch_root).generic_string();
  if (below.empty() || below == "." || below.rfind("..", 0) == 0) return;
  std::vector<fs::path> files;
  for (auto it = fs::recursive_directory_iterator(base); it != fs::recursive_directory_iterator();
       ++it) {
    if (it->path() == skip || it.depth() > 1) {
      if (it->is_directory()) it.disable_recursion_pending();
      if (it->path() == skip) continue;
    }
    if (it->is_regular_file() && it->file_size() <= max_seed_file_bytes)
      files.push_back(it->path());
  }
  std::sort(files.begin(), files.end());
  for (const auto& p : files) {
    out += "\n@@ B " + std::to_string(up) + " " + fs::relative(p, base).generic_string() + " " +
           std::to_string(mtime_ns(p)) + "\n" + read_all(p);
  }
}

// The candidate `path` (a folder, or a file for file layouts) in the text
// form, with the small files beside it ("@@ S") and further up ("@@ B").
std::string candidate_text(const fs::path& path) {
  std::string out;
  if (fs::is_regular_file(path)) {
    std::string bytes = read_all(path);
    out = "f " + path.filename().string() + "\n@@ F - " + std::to_string(mtime_ns(path));
    if (bytes.size() > max_seed_file_bytes) {
      out += " " + std::to_string(bytes.size());
      bytes.resize(max_seed_file_bytes);
    }
    out += "\n" + bytes;
  } else {
    out = "d " + path.filename().string();
    std::vector<fs::path> entries;
    for (const auto& e : fs::recursive_directory_iterator(path)) entries.push_back(e.path());
    std::sort(entries.begin(), entries.end());
    for (const auto& p : entries) {
      const std::string rel = fs::relative(p, path).generic_string();
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
  }
  const fs::path parent = path.parent_path();
  for (const auto& e : fs::directory_iterator(parent)) {
    if (e.path() != path && e.is_regular_file() && e.file_size() <= max_seed_file_bytes) {
      out += "\n@@ S " + e.path().filename().string() + "\n" + read_all(e.path());
    }
  }
  append_beside(out, parent, 0, path);
  append_beside(out, parent.parent_path(), 1, parent);
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
  scratch_root = tmp.path();

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

    hf_run peft(
        tmp / "peft",
        {.steps_per_epoch = 10, .with_eval = false, .peft = true, .nan_loss_from_step = 10});
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
    write_seed(
        out_dir, "manifest-full",
        candidate_text(write_manifest_checkpoint(tmp / "m" / "final", {.identifier = "final-model",
                                                                       .epoch = 3,
                                                                       .step = 1200,
                                                                       .train_loss = 1.21,
                                                                       .validation_loss = 1.35,
                                                                       .perplexity = 3.86})));
    write_seed(out_dir, "manifest-empty",
               candidate_text(write_manifest_checkpoint(tmp / "m" / "checkpoint-7")));
    write_seed(out_dir, "manifest-malformed",
               candidate_text(write_manifest_checkpoint_raw(tmp / "m" / "broken", "{ not json")));
  }
  // The other trainers' layouts, from their fixtures.
  {
    torchtune_checkpointer_run run(tmp / "ttc");
    run.train_steps(4);
    run.save(0, /*intermediate=*/true);
    write_seed(out_dir, "torchtune-checkpointer", candidate_text(run.checkpoint_dir(0)));
  }
  {
    lightning_run run(tmp / "lightning", tmp / "lightning-staging");
    run.log_epoch(0, 100);
    write_seed(out_dir, "lightning-ckpt", candidate_text(run.save(0, 100)));
    write_seed(out_dir, "lightning-deepspeed", candidate_text(run.save_deepspeed_folder(1, 200)));
  }
  {
    deepspeed_run run(tmp / "deepspeed");
    write_seed(out_dir, "deepspeed", candidate_text(run.save(100)));
    run.begin_save(200);
    write_seed(out_dir, "deepspeed-unfinished", candidate_text(run.tag_dir(200)));
  }
  {
    megatron_run run(tmp / "megatron");
    write_seed(out_dir, "megatron", candidate_text(run.save(1000)));
  }
  {
    torchtitan_run run(tmp / "torchtitan");
    write_seed(out_dir, "torchtitan-dcp", candidate_text(run.save(10)));
    write_seed(out_dir, "torchtitan-hf", candidate_text(run.save_hf(20)));
  }
  {
    orbax_run run(tmp / "orbax");
    write_seed(out_dir, "orbax", candidate_text(run.save(5, {{"loss", 1.25}})));
  }
  {
    nemo_run run(tmp / "nemo");
    write_seed(out_dir, "nemo", candidate_text(run.save(1, 640)));
    write_seed(out_dir, "nemo-ckpt", candidate_text(run.save_ckpt(2)));
  }
  {  // A lone weight file as a file candidate.
    write_file(tmp / "w" / "model.safetensors", safetensors_bytes(2, 4));
    write_seed(out_dir, "file-safetensors", candidate_text(tmp / "w" / "model.safetensors"));
  }
  return 0;
}
