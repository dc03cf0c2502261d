#pragma once
// The text form of a candidate folder that fuzz_layouts reads and
// make_layout_seeds writes. Line-based so that mutations of names, numbers and
// contents stay meaningful:
//
//   d checkpoint-40                       <- "d" (folder) or "f" (file), then the name
//   @@ F trainer_state.json 1700000000000000000 [size]
//   {...file contents, up to the next "\n@@ "...}
//   @@ D adapter [mtime]                  <- a folder inside the candidate
//   @@ S latest                           <- a file beside the candidate
//   global_step40
//   @@ B 0 logs/log_1.txt [mtime]         <- a file `up` levels above (read_beside)
//   Step 1 | loss:1.5
//
// A listed size that differs from the contents makes the listing and the
// bytes disagree, as when a file grows between the listing and the read.

#include <string_view>

namespace ckptd::fuzz {

inline constexpr std::string_view record_mark = "\n@@ ";

}  // namespace ckptd::fuzz
