#include "fuzz_driver.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

/* Defined by libFuzzer (compiler-rt, LLVM >= 11); absent, hence null, in a normal build. */
extern int LLVMFuzzerRunDriver(int *argc, char ***argv, flamingo_fuzz_callback callback)
    __attribute__((weak));

int flamingo_fuzz_driver_available(void) { return LLVMFuzzerRunDriver != NULL; }

int flamingo_fuzz_run_driver(int *argc, char ***argv, flamingo_fuzz_callback callback) {
    return LLVMFuzzerRunDriver(argc, argv, callback);
}

/* ------------------------------------------------------------------ replay crash reporting */

static const int crash_signals[] = {SIGILL, SIGTRAP, SIGSEGV, SIGBUS, SIGABRT, SIGFPE};
#define CRASH_SIGNAL_COUNT (sizeof crash_signals / sizeof crash_signals[0])
static struct sigaction previous[CRASH_SIGNAL_COUNT];
static char current[4096];
static volatile sig_atomic_t running;
static int installed;

static void on_crash(int signal, siginfo_t *info, void *context) {
    (void)context;
    if (running) {
        static const char prefix[] = "\nfuzz replay: crashed on input ";
        (void)!write(STDERR_FILENO, prefix, sizeof prefix - 1);
        (void)!write(STDERR_FILENO, current, strlen(current));
        (void)!write(STDERR_FILENO, "\n", 1);
        running = 0;
    }
    /* Hand the signal to whoever had it (the Swift runtime's backtracer, or the default). A
       fault recurs when the faulting instruction runs again on return, with its own context for
       the backtrace; a trap or an abort is raised again. */
    for (size_t i = 0; i < CRASH_SIGNAL_COUNT; i++) {
        if (crash_signals[i] == signal) {
            sigaction(signal, &previous[i], NULL);
        }
    }
    if (signal == SIGTRAP || signal == SIGABRT || info->si_code <= 0 /* sent, not a fault */) {
        raise(signal);
    }
}

void flamingo_fuzz_set_current_input(const char *path) {
    if (!installed) {
        installed = 1;
        struct sigaction action;
        memset(&action, 0, sizeof action);
        action.sa_sigaction = on_crash;
        sigemptyset(&action.sa_mask);
        action.sa_flags = SA_SIGINFO | SA_NODEFER;
        for (size_t i = 0; i < CRASH_SIGNAL_COUNT; i++) {
            sigaction(crash_signals[i], &action, &previous[i]);
        }
    }
    running = 0;
    if (path != NULL) {
        strncpy(current, path, sizeof current - 1);
        current[sizeof current - 1] = 0;
        running = 1;
    }
}
