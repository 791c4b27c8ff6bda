/* A small web server standing in for nginx and httpd in critest's images.
 *
 *   web_server [-p PORT] [-f PIDFILE] [-t TITLE] [-i INDEX]
 *
 * Listens on PORT (default 80) on every address (IPv6 dual-stack, IPv4
 * alone where the kernel has no IPv6) and answers `GET /` and
 * `GET /index.html` with 200 and the content of INDEX (a built-in page when
 * INDEX is missing or unreadable), anything else with 404. Once it listens
 * it writes its pid to PIDFILE (creating the directories above it), as
 * nginx writes /var/run/nginx.pid, and says so on stdout, with its name
 * (the file it runs as: `nginx`, `httpd`) in the line. Each request is
 * logged on stdout.
 *
 * With -t it runs under the process title TITLE: it executes itself again
 * with TITLE as argv[0], so that /proc/PID/cmdline starts with TITLE (nginx
 * shows `nginx: master process nginx -g daemon off;` there) while the
 * command name (/proc/PID/comm, what pidof matches) stays the file's name.
 *
 * SIGTERM, SIGINT, SIGQUIT, SIGHUP and SIGWINCH (httpd's stop signal) end
 * it at once, removing PIDFILE; as a container's PID 1 it would otherwise
 * ignore them. Each connection is served by a child of its own, reaped by
 * the kernel (SIGCHLD ignored). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

static const char *pid_file;

static const char default_page[] =
    "<!DOCTYPE html>\n<html><head><title>It works</title></head>\n"
    "<body><h1>It works!</h1></body></html>\n";

static char page[65536];
static size_t page_len;

static void quit(int sig) {
    (void)sig;
    if (pid_file) unlink(pid_file);
    _exit(0);
}

/* mkdir -p of the directory holding `path`. */
static void make_parents(const char *path) {
    char dir[4096];
    size_t n = strlen(path);
    if (n >= sizeof dir) return;
    memcpy(dir, path, n + 1);
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        mkdir(dir, 0755);
        *p = '/';
    }
}

static void load_page(const char *index) {
    int fd = index ? open(index, O_RDONLY | O_CLOEXEC) : -1;
    ssize_t n = fd >= 0 ? read(fd, page, sizeof page) : -1;
    if (fd >= 0) close(fd);
    if (n > 0) {
        page_len = (size_t)n;
    } else {
        page_len = sizeof default_page - 1;
        memcpy(page, default_page, page_len);
    }
}

static int listen_on(int port) {
    int one = 1, zero = 0;
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
        struct sockaddr_in6 a6;
        memset(&a6, 0, sizeof a6);
        a6.sin6_family = AF_INET6;
        a6.sin6_addr = in6addr_any;
        a6.sin6_port = htons((unsigned short)port);
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        if (bind(fd, (struct sockaddr *)&a6, sizeof a6) == 0 && listen(fd, 64) == 0) return fd;
        close(fd);
    }
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a4;
    memset(&a4, 0, sizeof a4);
    a4.sin_family = AF_INET;
    a4.sin_addr.s_addr = htonl(INADDR_ANY);
    a4.sin_port = htons((unsigned short)port);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&a4, sizeof a4) != 0 || listen(fd, 64) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void write_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        buf += n;
        len -= (size_t)n;
    }
}

static void serve(int conn, const char *name) {
    struct timeval tv = {5, 0};
    setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char req[8192];
    size_t got = 0;
    while (got < sizeof req - 1) {
        ssize_t n = read(conn, req + got, sizeof req - 1 - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
        req[got] = '\0';
        if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n")) break;
    }
    req[got] = '\0';
    char method[16] = "", target[1024] = "", version[16] = "";
    if (sscanf(req, "%15s %1023s %15s", method, target, version) < 2) return;
    char *query = strchr(target, '?');
    if (query) *query = '\0';
    int found = strcmp(target, "/") == 0 || strcmp(target, "/index.html") == 0;
    int head = strcmp(method, "HEAD") == 0;
    const char *body = found ? page : "<html><body><h1>Not Found</h1></body></html>\n";
    size_t body_len = found ? page_len : strlen(body);
    char hdr[256];
    int hl = snprintf(hdr, sizeof hdr,
                      "HTTP/1.1 %s\r\nServer: %s\r\nContent-Type: text/html\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                      found ? "200 OK" : "404 Not Found", name, body_len);
    write_all(conn, hdr, (size_t)hl);
    if (!head) write_all(conn, body, body_len);
    printf("%s: \"%s %s %s\" %d %zu\n", name, method, target, version, found ? 200 : 404,
           head ? 0 : body_len);
    fflush(stdout);
}

int main(int argc, char **argv) {
    int port = 80;
    const char *title = NULL, *index = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "+p:f:t:i:")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'f': pid_file = optarg; break;
        case 't': title = optarg; break;
        case 'i': index = optarg; break;
        default:
            fprintf(stderr, "usage: %s [-p PORT] [-f PIDFILE] [-t TITLE] [-i INDEX]\n", argv[0]);
            return 2;
        }
    }

    char self[4096];
    ssize_t self_len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (self_len > 0) self[self_len] = '\0';
    if (title && strcmp(argv[0], title) != 0 && self_len > 0) {
        argv[0] = (char *)title;
        execv(self, argv);
        perror("re-exec under the process title");
    }
    const char *name = self_len > 0 ? self : argv[0];
    if (strrchr(name, '/')) name = strrchr(name, '/') + 1;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = quit;
    sigemptyset(&sa.sa_mask);
    int stops[] = {SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGWINCH};
    for (size_t i = 0; i < sizeof stops / sizeof stops[0]; i++) sigaction(stops[i], &sa, NULL);
    signal(SIGCHLD, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);

    load_page(index);
    int lfd = listen_on(port);
    if (lfd < 0) {
        fprintf(stderr, "%s: cannot listen on port %d: %s\n", name, port, strerror(errno));
        return 1;
    }
    if (pid_file) {
        make_parents(pid_file);
        FILE *f = fopen(pid_file, "w");
        if (!f) {
            fprintf(stderr, "%s: cannot write %s: %s\n", name, pid_file, strerror(errno));
            return 1;
        }
        fprintf(f, "%d\n", (int)getpid());
        fclose(f);
    }
    printf("%s: serving on port %d, pid %d\n", name, port, (int)getpid());
    fflush(stdout);

    for (;;) {
        int conn = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (conn < 0) {
            if (errno != EINTR && errno != ECONNABORTED) usleep(10000);
            continue;
        }
        pid_t child = fork();
        if (child == 0) {
            /* The parent's handlers would remove its pid file. */
            pid_file = NULL;
            close(lfd);
            serve(conn, name);
            close(conn);
            _exit(0);
        }
        if (child < 0) serve(conn, name);
        close(conn);
    }
}
