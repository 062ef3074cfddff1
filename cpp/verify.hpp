// Verifier of A* traces and plans written as token ids (docs/design.md §5), in two modes:
//   paper  — the rules of the authors' validator ("Beyond Semantics", arXiv 2505.13775), error names as theirs;
//   strict — paper plus exact A* semantics (g, h, the set of creates after each close, nothing after the goal,
//            the plan equal to the extracted path), so that it accepts exactly the executions of A*.
//
// Response grammar (token ids of reasonless/vocab.py for the grid size; both modes):
//   * A leading `reasoning` is skipped. Parsing stops at the first `end`, <|eos|> or <|pad|>; what follows is
//     ignored (a sampler's output past its stop token is not part of the answer). No `end` is required.
//   * `create|close X Y cG cH` (two coordinate tokens, two cost tokens) is an operation; `plan X Y` a plan step;
//     `solution` is skipped wherever it stands (as the authors' validator drops it).
//   * Anything else — a keyword of the prompt, <|unk|>, <|bos|>, a second `reasoning`, a stray coordinate or
//     cost, an id outside the vocabulary — is one operation_syntax_error together with the coordinate and cost
//     tokens that follow it. A create/close whose four arguments are not of the right classes (or that is
//     truncated) is one operation_syntax_error; parsing resumes at the first token after the keyword that is not
//     a coordinate or cost. The same for a malformed plan step, which is a plan_syntax_error.
//   * The plan is the run of plan steps after the last well-formed operation. Steps followed by a later
//     operation are dropped: silently in paper mode (as the authors' validator does), as an
//     operation_syntax_error at that operation in strict mode. A plan_syntax_error anywhere, or an empty plan,
//     makes the plan invalid and skips every comparison between plan and trace (as the authors do).
//
// Errors carry a position: the index of the operation they concern (operations are numbered from 0 in text
// order, well-formed ones only). A syntax error gets the index the next operation would have; checks made at
// the end of the response (missing creates of the last expansion, goal_not_reached, plan/trace comparisons and
// every plan error) get n_ops. Errors are recorded in text order, so the first recorded is the first error.
// An operation that breaks a rule is recorded once (its first broken rule, in the order of the codes below)
// and skipped: it changes no state.
//
// Rules, checked in this order (strict-only ones marked *):
//   create: after_goal*, invalid_coordinates, create_close_wall, first_create_not_last_closed,
//           create_non_neighbor, create_already_closed, wrong_g* (g != g(last closed) + 1), wrong_h* (h is not
//           the Manhattan distance), unexpected_create* (not a neighbour A* creates now, or created twice).
//           Applied: a cell not yet open gets an entry; an open one takes the new g, h and parent (the last
//           closed node) only when g is lower.
//   close:  after_goal*, invalid_coordinates, create_close_wall, wrong_h*, close_not_in_open_list (the exact
//           x, y, g, h), close_not_lowest_f_value (ties allowed). Applied: it becomes the last closed node. In
//           strict mode the neighbours of the previous closed node that A* creates and that were not created
//           are one missing_create each, at the next applied close (or at the end); they do not block it.
//   end:    missing_create* (of the last expansion), goal_not_reached, plan_extraction_error; then, with a plan
//           free of syntax errors: plan_length_mismatch (the extracted path, empty without a closed goal, and
//           the plan differ in length), else extracted_plan_invalid, else plan_differs_from_trace* (cell by
//           cell); and the first of illegal_start, illegal_move (a step to a cell outside the grid, a wall or a
//           non-neighbour), plan_goal_not_reached.
// In strict mode, a response whose goal is not closed is goal_not_reached unless its open list is empty and the
// maze has no path (the complete search of an unsolvable maze; its plan should then be empty, which still makes
// the plan invalid: plan_syntax_error).
//
// Where the authors' validator differs: it lists operation_syntax_error before every other error (here errors
// are in text order); it parses text after `end` (here ignored); it does not bound-check plan steps (here a step
// outside the grid is illegal_move). plan_extraction_error and extracted_plan_invalid keep its names but cannot
// occur under its own rules, nor here: the first accepted close is necessarily the start, which therefore is
// never created, and a node's parent is the node closed last before its create, a free 4-neighbour closed
// before it, so parent links from a closed goal always lead back to the start along free neighbours.
//
// Plan optimality: a valid plan with as many cells as a shortest path (a BFS; when the trace obeyed every strict
// rule up to a closed goal, g(goal) + 1 already is that length).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace reasonless::verify {

enum Code : int16_t {
  // paper, trace
  OPERATION_SYNTAX_ERROR = 0,
  PLAN_SYNTAX_ERROR,  // plan error
  INVALID_COORDINATES,
  CREATE_CLOSE_WALL,
  FIRST_CREATE_NOT_LAST_CLOSED,
  CREATE_NON_NEIGHBOR,
  CREATE_ALREADY_CLOSED,
  CLOSE_NOT_IN_OPEN_LIST,
  CLOSE_NOT_LOWEST_F_VALUE,
  GOAL_NOT_REACHED,
  PLAN_EXTRACTION_ERROR,
  PLAN_LENGTH_MISMATCH,
  EXTRACTED_PLAN_INVALID,
  // plan
  ILLEGAL_START,
  ILLEGAL_MOVE,
  PLAN_GOAL_NOT_REACHED,
  // strict only, trace
  WRONG_G,
  WRONG_H,
  UNEXPECTED_CREATE,
  MISSING_CREATE,
  AFTER_GOAL,
  PLAN_DIFFERS_FROM_TRACE,
  N_CODES
};

const char* code_name(int code);
// Plan errors (plan_syntax_error, illegal_start, illegal_move, plan_goal_not_reached) make the plan invalid;
// every other code makes the trace invalid.
bool is_trace_error(int code);

enum class Mode : uint8_t { paper, strict };

// One problem, already validated: 4 <= rows, cols <= 64, walls 0/1, start and goal free cells of the grid.
struct Problem {
  int rows = 0, cols = 0;
  const uint8_t* walls = nullptr;  // rows*cols
  int start = 0, goal = 0;         // cell indices y*cols + x
};

struct Result {
  bool plan_valid = false, plan_optimal = false, trace_valid = false;
  int16_t first_error = -1;     // a Code, -1 if none
  int64_t first_error_at = -1;  // its position (see above), -1 if none
  int64_t n_ops = 0;            // well-formed operations
  int64_t plan_len = 0;         // steps of the plan (the trailing run)
  uint32_t counts[N_CODES] = {};  // saturating
};

// Reusable per-thread state: one instance verifies any number of responses, one at a time, without
// allocating per operation. Memory is O(64·64) plus the plan steps of the longest response seen.
class Verifier {
 public:
  Verifier();
  ~Verifier();
  Verifier(const Verifier&) = delete;
  Verifier& operator=(const Verifier&) = delete;

  void run(const Problem& problem, const uint16_t* tokens, int64_t n_tokens, Mode mode, Result* out);

 private:
  struct State;
  std::unique_ptr<State> s_;
};

// ---- The paper's text format, for the Python API ----
// Words are separated by ASCII whitespace (the bytes Python's str.split() splits at below 0x80); a word that
// contains other bytes is simply not a word of the vocabulary.

// Appends the token id of every word of s[0, n) to out; words outside the rows×cols vocabulary become <|unk|>.
void encode_words(const char* s, size_t n, int rows, int cols, std::vector<uint16_t>* out);

// The problem of a paper-format prompt `[<|bos|>] query start X Y goal X Y (wall X Y)*`, optionally followed by
// `reasoning …` (the response, from that word on). Coordinates are canonical decimals inside the grid;
// repeated walls are allowed; start and goal must be free cells.
struct ParsedPrompt {
  std::vector<uint8_t> walls;  // rows*cols
  int start_x = 0, start_y = 0, goal_x = 0, goal_y = 0;
  int64_t response_begin = -1;  // byte offset of `reasoning`, -1 if absent
  std::string error;            // why the prompt is malformed; empty if it is not
};
// Returns false (with out->error set) on a malformed prompt.
bool parse_prompt(const char* s, size_t n, int rows, int cols, ParsedPrompt* out);

}  // namespace reasonless::verify
