#include "arms.hpp"

#include <algorithm>
#include <cstring>

#include "names.hpp"

namespace reasonless {

bool parse_arm_kind(std::string_view name, ArmKind* out) { return parse_enum_name(name, kArmKindNames, out); }

std::string arm_kind_list() { return enum_name_list(kArmKindNames); }

namespace {

// A uniform integer in [0, n) by Lemire's multiply-shift on the high 32 bits: the bias is below
// n / 2^32, far under anything a training run could notice, and it needs no rejection loop.
inline uint32_t below(SplitMix64& rng, uint32_t n) {
  return static_cast<uint32_t>(((rng.next() >> 32) * static_cast<uint64_t>(n)) >> 32);
}

}  // namespace

int64_t arm_ops(ArmKind arm, const GridView& grid, int start, int goal, const uint16_t* own, int64_t n_own,
            uint64_t rng_state, ArmWorkspace& ws, uint16_t* out) {
  SplitMix64 rng{rng_state};
  switch (arm) {
    case ArmKind::kShuffled: {
      std::memcpy(out, own, static_cast<size_t>(n_own) * 3 * sizeof(uint16_t));
      // Fisher–Yates from the back: position i swaps with a uniform j in [0, i].
      for (int64_t i = n_own - 1; i > 0; --i) {
        const int64_t j = below(rng, static_cast<uint32_t>(i + 1));
        for (int k = 0; k < 3; ++k) std::swap(out[3 * i + k], out[3 * j + k]);
      }
      return n_own;
    }
    case ArmKind::kReversed:
      for (int64_t i = 0; i < n_own; ++i) std::memcpy(out + 3 * i, own + 3 * (n_own - 1 - i), 3 * sizeof(uint16_t));
      return n_own;
    case ArmKind::kNoise: {
      if (n_own == 0) return 0;
      const int cells = grid.size();
      int n_free = 0;
      for (int c = 0; c < cells; ++c)
        if (!grid.walls[c]) ws.free_cells[n_free++] = static_cast<int16_t>(c);
      // n_free >= 1: the start is free (checked by the caller).
      for (int64_t i = 0; i < n_own; ++i) {
        const uint64_t r = rng.next();
        const int cell = ws.free_cells[below(rng, static_cast<uint32_t>(n_free))];
        out[3 * i] = static_cast<uint16_t>(cell | ((r & 1) ? kCloseBit : 0));
        out[3 * i + 1] = static_cast<uint16_t>(below(rng, static_cast<uint32_t>(cells)));
        out[3 * i + 2] = static_cast<uint16_t>(below(rng, static_cast<uint32_t>(cells)));
      }
      return n_own;
    }
    case ArmKind::kBfs: return ws.search.run(grid, start, goal, SearchAlgorithm::kBfs, out);
    case ArmKind::kDfs: return ws.search.run(grid, start, goal, SearchAlgorithm::kDfs, out);
    case ArmKind::kGreedy: return ws.search.run(grid, start, goal, SearchAlgorithm::kGreedy, out);
    case ArmKind::kDijkstra: return ws.search.run(grid, start, goal, SearchAlgorithm::kDijkstra, out);
  }
  return 0;
}

}  // namespace reasonless
