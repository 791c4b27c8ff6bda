/* pgrep for images built on Debian's busybox-static, which has no pgrep
 * applet (critest runs `sh -c "pgrep sleep || true"`).
 *
 *   pgrep [-f] [-x] PATTERN
 *
 * Prints, one a line, the pids of the processes whose name (/proc/PID/comm)
 * matches the extended regular expression PATTERN (-f: the whole command
 * line, its arguments joined by spaces; -x: the whole name or command line
 * must match), leaving itself out. Exits 0 when one matched, 1 when none
 * did, 2 on a usage error, as procps' pgrep does. */
#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static size_t read_file(const char *path, char *buf, size_t size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    size_t got = 0;
    while (got < size - 1) {
        ssize_t n = read(fd, buf + got, size - 1 - got);
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(fd);
    buf[got] = '\0';
    return got;
}

int main(int argc, char **argv) {
    int full = 0, exact = 0, opt;
    while ((opt = getopt(argc, argv, "fx")) != -1) {
        switch (opt) {
        case 'f': full = 1; break;
        case 'x': exact = 1; break;
        default: goto usage;
        }
    }
    if (optind != argc - 1) goto usage;

    /* -x anchors the pattern at both ends. */
    char pattern[4096];
    snprintf(pattern, sizeof pattern, exact ? "^(%s)$" : "%s", argv[optind]);
    regex_t re;
    if (regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB) != 0) {
        fprintf(stderr, "pgrep: invalid pattern: %s\n", argv[optind]);
        return 2;
    }
    DIR *proc = opendir("/proc");
    if (!proc) {
        perror("pgrep: /proc");
        return 3;
    }
    long self = (long)getpid();
    int found = 0;
    struct dirent *e;
    while ((e = readdir(proc)) != NULL) {
        if (!isdigit((unsigned char)e->d_name[0])) continue;
        long pid = strtol(e->d_name, NULL, 10);
        if (pid == self) continue;
        char path[64], text[8192];
        snprintf(path, sizeof path, "/proc/%ld/%s", pid, full ? "cmdline" : "comm");
        size_t len = read_file(path, text, sizeof text);
        if (len == 0) continue;
        if (full) {
            while (len > 0 && text[len - 1] == '\0') len--;
            for (size_t i = 0; i < len; i++)
                if (text[i] == '\0') text[i] = ' ';
            text[len] = '\0';
        } else if (text[len - 1] == '\n') {
            text[len - 1] = '\0';
        }
        if (regexec(&re, text, 0, NULL, 0) != 0) continue;
        printf("%ld\n", pid);
        found = 1;
    }
    closedir(proc);
    regfree(&re);
    return found ? 0 : 1;

usage:
    fprintf(stderr, "usage: pgrep [-f] [-x] PATTERN\n");
    return 2;
}
