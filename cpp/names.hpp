// The string names of the small enums (tie policies, arms, search algorithms), looked up in their name tables.
#pragma once
#include <string>
#include <string_view>

namespace reasonless {

// Sets *out to the enum whose name is `name`; false if there is none.
template <class Enum, int N>
bool parse_enum_name(std::string_view name, const char* const (&names)[N], Enum* out) {
  for (int i = 0; i < N; ++i) {
    if (name == names[i]) {
      *out = static_cast<Enum>(i);
      return true;
    }
  }
  return false;
}

// "a, b, c": for error messages.
template <int N>
std::string enum_name_list(const char* const (&names)[N]) {
  std::string s;
  for (int i = 0; i < N; ++i) {
    if (i) s += ", ";
    s += names[i];
  }
  return s;
}

}  // namespace reasonless
