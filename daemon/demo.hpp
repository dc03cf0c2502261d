#pragma once
// The Quick start demo: a small simulated Hugging Face Trainer run that writes
// checkpoints into a folder ckptd watches, so a newcomer can see them appear.

#include <atomic>
#include <filesystem>
#include <thread>

namespace ckptd::daemon {

class demo_trainer {
 public:
  // Trains job "demo-job" in `runs_dir`: 3 epochs, a checkpoint every few
  // seconds with evaluation, and save_total_limit = 2, so old checkpoints
  // are rotated away as the real Trainer does.
  explicit demo_trainer(std::filesystem::path runs_dir);
  ~demo_trainer();  // stops the run and waits for it

 private:
  void run();
  std::filesystem::path job_dir_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace ckptd::daemon
