#pragma once
// ckptd::test fixtures: realistic trainer output on disk, for the watcher's
// unit tests and for black-box tests of the real daemon.
//
// Each generator writes the files IN THE ORDER THE REAL TRAINER WRITES THEM
// (see /work/shared/reference/checkpoint-layouts.md), each one with
// write_file (open, write, close), so an inotify watcher sees the same
// IN_CREATE / IN_CLOSE_WRITE sequence as with the real trainer. Weight files
// are tiny but valid: safetensors files pass the size rule and torch.save
// files are real ZIP archives.
//
// Loss values are deterministic functions of the step, so tests can assert
// exact metrics (compare with a small tolerance: JSON text round trips).
//
// Errors (a file that cannot be written, misuse such as finishing a save that
// was never begun) throw std::runtime_error or std::logic_error: these are
// test helpers. Not thread-safe: one run object per thread.

#include <boost/json/value.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ckptd::test {

// ---------------------------------------------------------------------------
// Files and bytes

// Writes `bytes` to `path` (creating missing parent folders, replacing the
// file), then closes it: one IN_CLOSE_WRITE.
void write_file(const std::filesystem::path& path, std::string_view bytes);

// Sets a file's or folder's modification time (ns since the Unix epoch)
// without following symlinks.
void set_mtime(const std::filesystem::path& path, std::int64_t mtime_ns);

// Deletes a tree like Python's shutil.rmtree: the files one by one, then each
// folder once empty, deepest first. Missing paths are ignored.
void remove_tree(const std::filesystem::path& path);

// A valid safetensors file: `tensors` F32 tensors of `floats_per_tensor`
// values each, header padded with spaces to 8 bytes as the reference writer
// does. Its size is exactly 8 + header + data.
std::string safetensors_bytes(std::size_t tensors = 2, std::size_t floats_per_tensor = 8);

// A valid ZIP archive shaped like torch.save's output (stored entries
// archive/data.pkl, archive/byteorder, archive/data/0 with `payload_bytes`
// bytes, archive/version), ending with a ZIP64 end record and locator plus
// the classic end record when `zip64` (as PyTorch's writer does), or with the
// classic end record only.
std::string zip_bytes(std::size_t payload_bytes = 64, bool zip64 = true);

// JSON text as Python's json.dumps(value, indent=2, sort_keys=True) writes it:
// floats in Python's repr (1.0, 0.0001, 1e-05), NaN/Infinity as Python's
// non-standard literals. No trailing newline.
std::string python_json(const boost::json::value& value);
// A double as Python's repr() writes it ("2.0", "1e-05", "NaN", "Infinity").
std::string python_float(double value);

// A fresh folder under $TMPDIR (or /tmp), removed with everything in it when
// the object goes away.
class temp_dir {
 public:
  explicit temp_dir(std::string_view tag = "ckptd-test");
  ~temp_dir();
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(std::string_view rel) const { return path_ / rel; }

 private:
  std::filesystem::path path_;
};

// The training metrics a test should expect for one checkpoint.
struct expected_metrics {
  std::int64_t epoch = 0;
  double train_loss = 0;
  double validation_loss = 0;
  double perplexity = 0;
};

// ---------------------------------------------------------------------------
// Hugging Face Trainer (TRL, llama-stack's huggingface provider)

struct hf_options {
  // Optimizer steps per epoch; the float "epoch" is step / steps_per_epoch.
  std::int64_t steps_per_epoch = 100;
  // Trainer's save_total_limit: after each save, the oldest checkpoint-*
  // folders beyond this many are deleted. 0 keeps all.
  int save_total_limit = 0;
  // Evaluate right before each save, as with eval_strategy == save_strategy:
  // each checkpoint's log_history then holds an eval_loss at its own step.
  bool with_eval = true;
  // A training "loss" entry is logged every this many steps.
  std::int64_t logging_steps = 10;
  // LoRA via PEFT: README.md, adapter_model.safetensors, adapter_config.json
  // instead of config.json, generation_config.json, model.safetensors.
  bool peft = false;
  // Training losses logged at or after this step are NaN (a diverged run);
  // -1: never.
  std::int64_t nan_loss_from_step = -1;
  // num_train_epochs in trainer_state.json (max_steps follows from it).
  std::int64_t num_train_epochs = 3;
};

// One Trainer run writing checkpoints into `output_dir`:
//
//   hf_run run(dir / "job", {.steps_per_epoch = 50, .save_total_limit = 2});
//   run.begin_save(50);   // checkpoint-50/ with everything but trainer_state.json
//   run.finish_save();    // trainer_state.json, then rotation
//   run.save(100);        // both at once
class hf_run {
 public:
  explicit hf_run(std::filesystem::path output_dir, hf_options options = {});

  const std::filesystem::path& output_dir() const { return output_dir_; }
  const hf_options& options() const { return options_; }
  // output_dir / "checkpoint-<step>"
  std::filesystem::path checkpoint_dir(std::int64_t step) const;

  // Starts the save of `step` (> 0, larger than every earlier save): writes
  // checkpoint-<step>/ with, in this order, config.json,
  // generation_config.json, model.safetensors (or the PEFT files),
  // training_args.bin, optimizer.pt, scheduler.pt, rng_state.pth. Returns the
  // folder.
  std::filesystem::path begin_save(std::int64_t step);
  // Ends the pending save: writes trainer_state.json (log_history accumulated
  // over the run), then applies save_total_limit rotation like the Trainer
  // (oldest by folder mtime, or by step when all mtimes lie within 1 s;
  // deleted file by file, then the folder). Returns the deleted folders.
  std::vector<std::filesystem::path> finish_save();
  // begin_save + finish_save; returns the checkpoint folder.
  std::filesystem::path save(std::int64_t step);

  // A crash mid-write: writes only the first `bytes` bytes of the pending
  // save's trainer_state.json. The save stays pending; finish_save() may
  // still complete it.
  void write_truncated_trainer_state(std::size_t bytes);

  // The trainer_state.json text a save at `step` writes, given the saves so
  // far (sorted keys, indent 2, trailing newline, like the Trainer).
  std::string trainer_state_json(std::int64_t step) const;

  // The training loss logged at `step` (NaN per nan_loss_from_step) and the
  // eval loss an evaluation at `step` logs. Rounded to 4 decimals.
  double train_loss_at(std::int64_t step) const;
  static double eval_loss_at(std::int64_t step);

  // What ckptd should find in the checkpoint saved at `step`: the last
  // training loss logged at or before it (nullopt before the first logging
  // step), its eval loss (nullopt without evaluation), the whole epochs done.
  std::optional<double> expected_train_loss(std::int64_t step) const;
  std::optional<double> expected_validation_loss(std::int64_t step) const;
  std::int64_t expected_epoch(std::int64_t step) const;
  // All four, or nullopt when a loss is missing or not finite.
  std::optional<expected_metrics> expected_metrics_at(std::int64_t step) const;

  // Steps whose saves finished, oldest first (rotated ones included).
  const std::vector<std::int64_t>& saved_steps() const { return saved_; }

 private:
  std::vector<std::filesystem::path> rotate() const;

  std::filesystem::path output_dir_;
  hf_options options_;
  std::vector<std::int64_t> saved_;
  std::optional<std::int64_t> pending_;
};

// ---------------------------------------------------------------------------
// llama-stack inline torchtune provider

enum class torchtune_format {
  meta,         // consolidated.00.pth, adapter/adapter.pth (the provider's default)
  huggingface,  // adapter_model.pt, adapter/adapter_model.safetensors, adapter/adapter_config.json
};

struct torchtune_options {
  std::string algorithm = "sft";  // "sft" or "dpo": the folder is <model>-<algorithm>-<epoch>
  torchtune_format format = torchtune_format::meta;
  // DiskLogger lines written by begin_epoch (one per optimizer step).
  int steps_per_epoch = 3;
  // Copy the base model's side files (meta: params.json, tokenizer.model;
  // huggingface: config.json, generation_config.json, tokenizer.json) as the
  // provider does.
  bool copy_model_files = true;
};

// One llama-stack torchtune job writing into `checkpoint_root` (the
// provider's ~/.llama/checkpoints):
//
//   torchtune_run run(dir / "job");
//   run.begin_epoch("Llama3.2-3B-Instruct", 0);  // <model>-sft-0/log/log_<ts>.txt, lines appended
//   run.finish_epoch();                          // weights; the folder settles
class torchtune_run {
 public:
  explicit torchtune_run(std::filesystem::path checkpoint_root, torchtune_options options = {});
  ~torchtune_run();  // closes the open log
  torchtune_run(const torchtune_run&) = delete;
  torchtune_run& operator=(const torchtune_run&) = delete;

  // "<model>-<algorithm>-<epoch>" under the root.
  std::filesystem::path epoch_dir(std::string_view model, std::int64_t epoch) const;

  // Starts an epoch like the provider's training loop: closes the previous
  // epoch's log (the replaced DiskLogger is garbage-collected), creates
  // <model>-<algorithm>-<epoch>/log/log_<unix seconds>.txt and appends one
  // DiskLogger text line per step ("Step 12 | loss:1.8342 lr:2e-05 ...
  // grad_norm:tensor(0.8700) "), leaving the log open. Returns the folder.
  std::filesystem::path begin_epoch(std::string_view model, std::int64_t epoch);
  // Saves the epoch's checkpoint into its folder. meta: the copied files,
  // consolidated.00.pth, then adapter/adapter.pth. huggingface:
  // adapter_model.pt, adapter/adapter_model.safetensors,
  // adapter/adapter_config.json, then the copied files. The log stays open.
  // Returns the folder.
  std::filesystem::path finish_epoch();
  // Closes the current log (IN_CLOSE_WRITE under log/), as at the end of the
  // job. Idempotent.
  void close_log();

  // The loss the log line of global step `step` (1-based) carries.
  static double train_loss_at(std::int64_t step);
  const std::filesystem::path& log_file() const { return log_path_; }

 private:
  std::filesystem::path root_;
  torchtune_options options_;
  std::filesystem::path current_;
  std::filesystem::path log_path_;
  int log_fd_ = -1;
  std::int64_t global_step_ = 0;
};

// ---------------------------------------------------------------------------
// ckptd's manifest (see watcher/src/layout_manifest.cpp for the format)

inline constexpr std::string_view manifest_file_name = "ckptd-checkpoint.json";

struct manifest_fields {
  std::optional<std::string> identifier = std::nullopt;
  std::optional<std::int64_t> epoch = std::nullopt;
  std::optional<std::int64_t> step = std::nullopt;
  // training_metrics is written when either loss is set; perplexity only
  // when set (ckptd then derives exp(validation_loss)).
  std::optional<double> train_loss = std::nullopt;
  std::optional<double> validation_loss = std::nullopt;
  std::optional<double> perplexity = std::nullopt;
};

// The manifest text for `fields` (Python json style).
std::string manifest_json(const manifest_fields& fields);

// Writes a checkpoint folder `dir`: config.json, model.safetensors, then the
// manifest LAST. Returns `dir`.
std::filesystem::path write_manifest_checkpoint(const std::filesystem::path& dir,
                                                const manifest_fields& fields = {});
// The same with a manifest of any text (malformed ones included).
std::filesystem::path write_manifest_checkpoint_raw(const std::filesystem::path& dir,
                                                    std::string_view manifest_text);

}  // namespace ckptd::test
