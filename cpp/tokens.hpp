// Maze problems + A* results -> training token sequences, and token sequences -> paper text (docs/design.md §4).
//
// A sequence is
//   <|bos|> query start X Y goal X Y (wall X Y)* reasoning (close|create X Y cG cH)* solution (plan X Y)* end <|eos|>
// with walls row-major. Its length follows from three counts alone, so callers size the output first
// (sequence_length) and then fill caller-owned memory (write_sequence); that is what lets a whole corpus be
// tokenized straight into a memory-mapped array.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

namespace reasonless::tokens {

// Ids 0..13; the same order as reasonless/vocab.py.
enum : uint16_t {
  PAD = 0, UNK, BOS, EOS,
  QUERY, START, GOAL, WALL, REASONING, CREATE, CLOSE, SOLUTION, PLAN, END,
  FIRST_COORD
};
constexpr uint16_t CLOSE_BIT = 0x8000;
constexpr int MIN_SIDE = 4, MAX_SIDE = 64;
constexpr int MAX_CELLS = MAX_SIDE * MAX_SIDE;

// Layout of the response: the ops with their costs (correct), the ops as `create|close X Y` without costs (no_costs,
// the correct_no_costs arm), or no ops at all (none).
enum class Arm { correct, none, no_costs };

// Token ids of one grid size: coordinates from 14, costs after the max(R, C) coordinates.
struct Vocab {
  int rows = 0, cols = 0;
  Vocab(int r, int c) : rows(r), cols(c) {}
  int cells() const { return rows * cols; }
  int coords() const { return std::max(rows, cols); }
  uint16_t first_cost() const { return static_cast<uint16_t>(FIRST_COORD + coords()); }
  int size() const { return FIRST_COORD + coords() + cells(); }
};

// bos query start X Y goal X Y
constexpr int64_t HEAD_TOKENS = 8;
// head + reasoning solution end eos
constexpr int64_t FIXED_TOKENS = HEAD_TOKENS + 4;

inline int64_t prompt_length(int64_t n_walls) { return HEAD_TOKENS + 3 * n_walls; }
inline int64_t sequence_length(int64_t n_walls, int64_t n_ops, int64_t n_plan, Arm arm) {
  const int64_t per_op = arm == Arm::correct ? 5 : arm == Arm::no_costs ? 3 : 0;
  return FIXED_TOKENS + 3 * n_walls + per_op * n_ops + 3 * n_plan;
}

// Number of walls in a grid of 0/1 bytes, or -1 if some byte is neither. Written as a plain sum and OR so
// the compiler vectorizes it.
inline int64_t count_walls(const uint8_t* __restrict walls, int64_t n) {
  uint32_t sum = 0;
  uint8_t any = 0;
  for (int64_t i = 0; i < n; ++i) {
    sum += walls[i];
    any |= walls[i];
  }
  return (any & ~uint8_t{1}) ? -1 : static_cast<int64_t>(sum);
}

// (coordinate id of x) | (coordinate id of y) << 16 for every cell, so writers need no division by cols.
inline std::vector<uint32_t> cell_coord_table(const Vocab& v) {
  std::vector<uint32_t> t(MAX_CELLS, 0);
  for (int y = 0; y < v.rows; ++y)
    for (int x = 0; x < v.cols; ++x)
      t[y * v.cols + x] = uint32_t(FIRST_COORD + x) | (uint32_t(FIRST_COORD + y) << 16);
  return t;
}

// One example's inputs, already validated: walls 0/1, coordinates in the grid, cells and costs < rows*cols.
struct Example {
  const uint8_t* walls;      // rows*cols
  int32_t start[2], goal[2];  // (x, y)
  const uint16_t* ops;        // n_ops rows of (cell|CLOSE_BIT, g, h)
  int64_t n_ops;
  const uint16_t* plan;       // n_plan cells
  int64_t n_plan;
};

namespace detail {
// Four tokens in one 8-byte store. Callers use it only where the slot after the three or four tokens they
// mean to write belongs to the same sequence and is written later, so the spare token is never seen.
inline void store4(uint16_t* p, uint64_t packed) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  std::memcpy(p, &packed, 8);
#else
  for (int k = 0; k < 4; ++k) p[k] = static_cast<uint16_t>(packed >> (16 * k));
#endif
}
}  // namespace detail

// The response of an example: `reasoning`, the ops in the arm's layout, `solution`, the plan, `end <|eos|>`.
// Writes exactly response_length(n_ops, n_plan, arm) tokens at out and returns the end. xy is cell_coord_table(v).
inline int64_t response_length(int64_t n_ops, int64_t n_plan, Arm arm) { return sequence_length(0, n_ops, n_plan, arm) - HEAD_TOKENS; }

inline uint16_t* write_response(uint16_t* __restrict p, const Example& ex, const Vocab& v, const uint32_t* xy, Arm arm) {
  using detail::store4;
  *p++ = REASONING;

  if (arm == Arm::correct) {
    const uint64_t fc = v.first_cost();
    const uint16_t* __restrict op = ex.ops;
    for (int64_t k = 0; k < ex.n_ops; ++k, op += 3) {
      const uint32_t c = op[0];
      const uint64_t keyword = CREATE + (c >> 15);  // CLOSE == CREATE + 1
      store4(p, keyword | (uint64_t(xy[c & (CLOSE_BIT - 1)]) << 16) | ((fc + op[1]) << 48));
      p[4] = static_cast<uint16_t>(fc + op[2]);
      p += 5;
    }
  } else if (arm == Arm::no_costs) {
    // The spare token of each store lands on the next op's keyword (or on `solution`), written afterwards.
    const uint16_t* __restrict op = ex.ops;
    for (int64_t k = 0; k < ex.n_ops; ++k, op += 3) {
      const uint32_t c = op[0];
      store4(p, (CREATE + (c >> 15)) | (uint64_t(xy[c & (CLOSE_BIT - 1)]) << 16));
      p += 3;
    }
  }
  *p++ = SOLUTION;

  // The spare token of the last plan store lands on `end`.
  for (int64_t k = 0; k < ex.n_plan; ++k) {
    store4(p, uint64_t{PLAN} | (uint64_t(xy[ex.plan[k]]) << 16));
    p += 3;
  }
  p[0] = END;
  p[1] = EOS;
  return p + 2;
}

// Writes exactly sequence_length(n_walls, n_ops, n_plan, arm) tokens at out and returns the end.
inline uint16_t* write_sequence(uint16_t* __restrict out, const Example& ex, const Vocab& v, const uint32_t* xy,
                                Arm arm) {
  using detail::store4;
  uint16_t* p = out;
  p[0] = BOS;
  p[1] = QUERY;
  p[2] = START;
  p[3] = static_cast<uint16_t>(FIRST_COORD + ex.start[0]);
  p[4] = static_cast<uint16_t>(FIRST_COORD + ex.start[1]);
  p[5] = GOAL;
  p[6] = static_cast<uint16_t>(FIRST_COORD + ex.goal[0]);
  p[7] = static_cast<uint16_t>(FIRST_COORD + ex.goal[1]);
  p += HEAD_TOKENS;

  // Every cell stores its `wall X Y` and only a wall advances the pointer: no unpredictable branch. Stores
  // past the last wall land on the at least four tokens that follow (reasoning solution end eos) and are
  // overwritten by write_response.
  const int rows = v.rows, cols = v.cols;
  for (int y = 0; y < rows; ++y) {
    const uint8_t* __restrict row = ex.walls + static_cast<int64_t>(y) * cols;
    const uint64_t base = uint64_t{WALL} | (uint64_t(FIRST_COORD + y) << 32);
    for (int x = 0; x < cols; ++x) {
      store4(p, base | (uint64_t(FIRST_COORD + x) << 16));
      p += 3 * row[x];
    }
  }
  return write_response(p, ex, v, xy, arm);
}

// ---- Rendering token ids back to the paper's text ----

// Each id's word plus its trailing space, padded to 16 bytes so a word is copied with one fixed-size store;
// bos, eos and pad have length 0 (a training sequence renders to exactly the paper text).
struct WordTable {
  static constexpr int STRIDE = 16;
  int size = 0;
  std::vector<char> bytes;       // size * STRIDE
  std::vector<uint8_t> lengths;  // word length + 1, or 0; for every uint16 value, so sums need no range test

  explicit WordTable(const Vocab& v) : size(v.size()), bytes(size_t(v.size()) * STRIDE, 0), lengths(65536, 0) {
    static const char* const keywords[] = {"<|pad|>", "<|unk|>", "<|bos|>", "<|eos|>", "query",
                                           "start",   "goal",    "wall",    "reasoning", "create",
                                           "close",   "solution", "plan",   "end"};
    for (int id = 0; id < size; ++id) {
      char word[STRIDE];
      int n;
      if (id < FIRST_COORD) {
        n = static_cast<int>(std::strlen(keywords[id]));
        std::memcpy(word, keywords[id], n);
      } else if (id < v.first_cost()) {
        n = write_uint(word, id - FIRST_COORD);
      } else {
        word[0] = 'c';
        n = 1 + write_uint(word + 1, id - v.first_cost());
      }
      word[n] = ' ';
      std::memcpy(&bytes[size_t(id) * STRIDE], word, n + 1);
      if (id != PAD && id != BOS && id != EOS) lengths[id] = static_cast<uint8_t>(n + 1);
    }
  }

 private:
  static int write_uint(char* s, int value) {
    char digits[12];
    int n = 0;
    do {
      digits[n++] = static_cast<char>('0' + value % 10);
      value /= 10;
    } while (value);
    for (int k = 0; k < n; ++k) s[k] = digits[n - 1 - k];
    return n;
  }
};

// Text length of one sequence, or -1 if an id is outside the vocabulary.
inline int64_t text_length(const uint16_t* __restrict tokens, int64_t n, const WordTable& w) {
  const uint8_t* __restrict len = w.lengths.data();
  // Two sums halve the add chain; the range test is a separate loop that vectorizes.
  int64_t sum0 = 0, sum1 = 0, k = 0;
  for (; k + 2 <= n; k += 2) {
    sum0 += len[tokens[k]];
    sum1 += len[tokens[k + 1]];
  }
  if (k < n) sum0 += len[tokens[k]];
  uint16_t top = 0;
  for (k = 0; k < n; ++k) top = std::max(top, tokens[k]);
  if (n && top >= w.size) return -1;
  const int64_t total = sum0 + sum1;
  return total > 0 ? total - 1 : 0;  // no space after the last word
}

// Writes exactly text_length(tokens, n, w) bytes at out (ids already checked).
inline void write_text(char* __restrict out, int64_t out_len, const uint16_t* tokens, int64_t n, const WordTable& w) {
  char* p = out;
  char* const end = out + out_len;
  const char* table = w.bytes.data();
  const uint8_t* len = w.lengths.data();
  int64_t k = 0;
  // Fixed 16-byte copies while they cannot reach past this sequence's bytes (another thread may own the next).
  for (; k < n && end - p >= WordTable::STRIDE; ++k) {
    std::memcpy(p, table + size_t(tokens[k]) * WordTable::STRIDE, WordTable::STRIDE);
    p += len[tokens[k]];
  }
  // The tail copies exact lengths; the last word's space falls outside `end` and is cut.
  for (; k < n; ++k) {
    const int64_t m = std::min<int64_t>(len[tokens[k]], end - p);
    std::memcpy(p, table + size_t(tokens[k]) * WordTable::STRIDE, static_cast<size_t>(m));
    p += m;
  }
}

// ---- Batches (tokens.cpp): the loops behind the Python API, parallel over examples ----

// A batch in the project's shared layout (COMMON.md). Offsets index ops rows / plan cells as given and may
// start above zero. n_op_rows / n_plan_cells < 0 means "array not supplied" (lengths only): offsets are then
// checked for order, not against an array.
struct Batch {
  int rows = 0, cols = 0;
  int64_t n = 0;
  const uint8_t* walls = nullptr;  // n * rows * cols
  const int32_t* start = nullptr;  // n * 2, (x, y); may be null for lengths only
  const int32_t* goal = nullptr;
  const uint16_t* ops = nullptr;  // n_op_rows * 3
  int64_t n_op_rows = -1;
  const int64_t* ops_offsets = nullptr;  // n + 1
  const uint16_t* plan = nullptr;
  int64_t n_plan_cells = -1;
  const int64_t* plan_offsets = nullptr;  // n + 1
};

enum class Fault { none, start, goal, wall_value, ops_offsets, plan_offsets, op_cell, op_cost, plan_cell, out_span };

// Index of the first faulty example (n if none) and its fault; describe() words it for the user.
struct FaultReport {
  int64_t example = 0;
  Fault fault = Fault::none;
};

// Checks example i; with `contents` also the op and plan values (needs the arrays). Sets *n_walls.
Fault check_example(const Batch& b, int64_t i, Arm arm, bool contents, int64_t* n_walls);
// A message naming the example and the offending value, for a fault found by check_example or the out check.
std::string describe(const Batch& b, const FaultReport& r, Arm arm, const int64_t* out_offsets, int64_t out_size);

// lengths[i], prompt_lengths[i] for every example; returns the first fault (example == n if none).
FaultReport batch_lengths(const Batch& b, Arm arm, int threads, int64_t* lengths, int32_t* prompt_lengths);
// Writes example i at out + out_offsets[i] after checking it and that its span has exactly its length and
// lies in [0, out_size). On a fault, out may be partly written.
FaultReport batch_tokenize(const Batch& b, Arm arm, uint16_t* out, int64_t out_size, const int64_t* out_offsets,
                           int threads);

// Checks each example as batch_tokenize does and writes its response (write_response) into a buffer of the worker
// thread that handles it, then calls visit(i, tokens, length, worker) there: a consumer such as the verifier reads
// each response while it is in cache, and the batch's tokens never exist all at once. Worker ids are below
// resolve_threads(threads, n). Returns the first faulty example (n if none); examples after it may be unvisited.
using ResponseVisitor = std::function<void(int64_t i, const uint16_t* tokens, int64_t length, int worker)>;
FaultReport batch_visit_responses(const Batch& b, Arm arm, int threads, const ResponseVisitor& visit);

// Rendering: text byte length of each sequence (returns the first sequence holding an id outside the
// vocabulary, n if none), then the bytes at text_offsets.
int64_t batch_text_lengths(const uint16_t* tokens, const int64_t* offsets, int64_t n, const WordTable& w,
                           int threads, int64_t* text_lengths);
void batch_render(const uint16_t* tokens, const int64_t* offsets, int64_t n, const WordTable& w,
                  const int64_t* text_offsets, char* text, int threads);

}  // namespace reasonless::tokens
