// A minimal test harness: TEST(name) registers a function, CHECK* record failures, main()
// runs every test and returns non-zero if any check failed.
#pragma once

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace check {

struct Case {
    const char* name;
    std::function<void()> fn;
};

inline std::vector<Case>& registry() {
    static std::vector<Case> cases;
    return cases;
}

inline int& failures() {
    static int n = 0;
    return n;
}

// argv[1] of the test executable: the fixtures folder (when the test needs one).
inline std::filesystem::path& fixtures() {
    static std::filesystem::path dir;
    return dir;
}

struct Register {
    Register(const char* name, std::function<void()> fn) { registry().push_back({name, std::move(fn)}); }
};

inline void fail(const char* file, int line, const std::string& what) {
    ++failures();
    std::cerr << file << ":" << line << ": FAILED: " << what << "\n";
}

}  // namespace check

#define CHECK_CONCAT2(a, b) a##b
#define CHECK_CONCAT(a, b) CHECK_CONCAT2(a, b)
#define TEST(name)                                                         \
    static void name();                                                    \
    static check::Register CHECK_CONCAT(register_, name)(#name, name);    \
    static void name()

#define CHECK(cond)                                                   \
    do {                                                              \
        if (!(cond)) check::fail(__FILE__, __LINE__, "CHECK(" #cond ")"); \
    } while (0)

#define CHECK_EQ(a, b)                                                                    \
    do {                                                                                  \
        const auto& check_a_ = (a);                                                       \
        const auto& check_b_ = (b);                                                       \
        if (!(check_a_ == check_b_)) {                                                    \
            std::ostringstream check_os_;                                                 \
            check_os_ << "CHECK_EQ(" #a ", " #b "): " << check_a_ << " != " << check_b_; \
            check::fail(__FILE__, __LINE__, check_os_.str());                             \
        }                                                                                 \
    } while (0)

// Expects `expr` to throw `type` whose what() contains `substr`.
#define CHECK_THROWS(expr, type, substr)                                                       \
    do {                                                                                       \
        try {                                                                                  \
            (void)(expr);                                                                      \
            check::fail(__FILE__, __LINE__, "no exception from " #expr);                       \
        } catch (const type& check_e_) {                                                      \
            const std::string check_msg_ = check_e_.what();                                    \
            if (check_msg_.find(substr) == std::string::npos) {                                \
                check::fail(__FILE__, __LINE__,                                                \
                            std::string("message of " #expr " lacks '") + (substr) +           \
                                "': " + check_msg_);                                           \
            } else {                                                                           \
                std::cout << "  ok: " << check_msg_ << "\n";                                   \
            }                                                                                  \
        } catch (const std::exception& check_e_) {                                             \
            check::fail(__FILE__, __LINE__,                                                    \
                        std::string(#expr " threw another type: ") + check_e_.what());         \
        }                                                                                      \
    } while (0)

int main(int argc, char** argv) {
    if (argc > 1) check::fixtures() = argv[1];
    for (const auto& c : check::registry()) {
        std::cout << "[ RUN  ] " << c.name << std::endl;
        const int before = check::failures();
        try {
            c.fn();
        } catch (const std::exception& e) {
            check::fail(__FILE__, __LINE__, std::string("uncaught exception: ") + e.what());
        }
        std::cout << (check::failures() == before ? "[  OK  ] " : "[ FAIL ] ") << c.name << std::endl;
    }
    std::cout << check::registry().size() << " tests, " << check::failures() << " failed checks\n";
    return check::failures() == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
