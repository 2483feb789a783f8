/*
 * corral-init: pid 1 of every linux container made by Corral's runtime.
 *
 * The container's processes are started later from outside (an exec into the
 * namespaces, like `runc exec`), so pid 1 has only two jobs: keep the pid
 * namespace alive, and reap the orphans that get reparented to it. It blocks
 * every signal and takes them one at a time with sigwait: SIGCHLD reaps, any
 * other signal is ignored (pid 1 of a namespace can only be killed from the
 * outside with SIGKILL, which is how the runtime ends a container).
 *
 * Built with `cc -static` so it runs in any rootfs, even one without a libc.
 */
#include <signal.h>
#include <stddef.h>
#include <sys/wait.h>

int main(void) {
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    for (;;) {
        int sig = 0;
        if (sigwait(&all, &sig) != 0) {
            continue;
        }
        if (sig == SIGCHLD) {
            while (waitpid(-1, NULL, WNOHANG) > 0) {
            }
        }
    }
}
