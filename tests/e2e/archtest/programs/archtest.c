/* archtest: the static workloads of ARCH's checkpoint end-to-end tests (one multi-call
 * binary, built at session start with `cc -static -O2` and put into the test image as
 * /bin/archtest; archtest/workloads.py describes and checks what each one writes).
 *
 *   archtest counter FILE [MS]     keeps FILE open (O_APPEND), appends "start <uuid>\n"
 *                                  and then "N\n" for N = 1, 2, ... every MS ms
 *                                  (default 50), each fsync'd.
 *   archtest produce [MS]          writes "N\n" for N = 1, 2, ... to stdout every MS ms.
 *   archtest consume FILE          appends "start <uuid>\n" to FILE, then reads lines from
 *                                  stdin and for the K-th line L appends "K L\n" (fsync'd).
 *   archtest memory TICKS SUMS [MIB] [MS]
 *                                  holds MIB MiB (default 64) of anonymous memory in the
 *                                  pattern below; appends "start <uuid>\n" to TICKS, then
 *                                  every MS ms (default 50) applies tick T (T = 1, 2, ...)
 *                                  and appends "T\n" to TICKS; after a
 *                                  SIGUSR1 appends "T CRC32\n" of the whole buffer to SUMS.
 *   archtest mutate                changes the root filesystem (see do_mutate), writes
 *                                  "start <uuid>" to /ready and then waits forever.
 *   archtest tcpclient IP PORT LOG [MS]
 *                                  streams records to a TCP server at IP:PORT: on every
 *                                  connect the server first sends "N\n", the number of
 *                                  records it holds; the client then sends "N+1\n",
 *                                  waits for that line back (the acknowledgement), sends
 *                                  the next every MS ms (default 20). On any error (reset,
 *                                  EOF) it reconnects and resumes from what the server
 *                                  says it holds. LOG gets "start <uuid>\n", then
 *                                  "connect\n" per connection and "lost <why>\n" per loss.
 *   archtest tcpserver PORT LOG    the peer of tcpclient: listens on 0.0.0.0:PORT, greets
 *                                  each connection with "N\n" (the last record it holds),
 *                                  then appends every line it reads to LOG (fsync'd) and
 *                                  sends it back.
 *   archtest list [ROOT]           prints one line per entry below ROOT (default "/") on
 *                                  ROOT's filesystem: path, type, mode, uid, gid, size,
 *                                  link target or SHA-256, hardlink group, holes, xattrs.
 *   archtest lock flock|posix FILE STATUS [MS]
 *                                  takes an exclusive lock on FILE (flock(2), or a POSIX
 *                                  fcntl lock on the whole file), appends "start <uuid>" to
 *                                  STATUS, then every MS ms (default 50) "N held" while
 *                                  /proc/self/fdinfo shows the lock on its fd, else "N lost".
 *   archtest trylock flock|posix FILE
 *                                  tries the same lock without waiting; prints "busy" (exit
 *                                  0) when another process holds it, "got" (exit 1) if not.
 *   archtest ghost FILE MIB STATUS [MS]
 *                                  writes MIB MiB of the page pattern (below) to FILE, keeps
 *                                  it open and unlinks it; appends "start <uuid>" to STATUS,
 *                                  then every MS ms reads the whole file back and appends
 *                                  "N ok" or "N bad".
 *   archtest iouring STATUS        sets up an io_uring instance, keeps it, and counts in
 *                                  STATUS like counter (CRIU cannot dump io_uring).
 *
 * Memory pattern (MIB MiB, 4096-byte pages p = 0 .. P-1): page p is 256 copies of the
 * 16 bytes (u64le p, u64le 0x41524348434b5054). Tick T sets the first 8 bytes of page
 * (T * 7919) % P to u64le T. CRC32 is zlib's (polynomial 0xEDB88320).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define MAGIC 0x41524348434b5054ULL
#define PAGE 4096
#define STRIDE 7919

static void __attribute__((noreturn)) die(const char *what) {
  fprintf(stderr, "archtest: %s: %s\n", what, strerror(errno));
  exit(111);
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static void write_all(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, buf, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) die("write");
    buf += n;
    len -= (size_t)n;
  }
}

static int open_append(const char *path) {
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) die(path);
  return fd;
}

static void append_line(int fd, const char *line) {
  write_all(fd, line, strlen(line));
  if (fsync(fd) != 0) die("fsync");
}

/* "start <uuid>\n": a fresh uuid per process start (told apart from a restore). */
static void append_start_line(int fd) {
  char uuid[64] = "unknown", line[96];
  int u = open("/proc/sys/kernel/random/uuid", O_RDONLY | O_CLOEXEC);
  if (u >= 0) {
    ssize_t n = read(u, uuid, sizeof uuid - 1);
    uuid[n > 0 ? n : 0] = '\0';
    uuid[strcspn(uuid, "\n")] = '\0';
    close(u);
  }
  snprintf(line, sizeof line, "start %s\n", uuid);
  append_line(fd, line);
}

static int counter(int argc, char **argv) {
  if (argc < 1) return 2;
  long ms = argc > 1 ? atol(argv[1]) : 50;
  int fd = open_append(argv[0]);
  append_start_line(fd);
  char line[32];
  for (unsigned long n = 1;; ++n) {
    snprintf(line, sizeof line, "%lu\n", n);
    append_line(fd, line);
    sleep_ms(ms);
  }
}

static int produce(int argc, char **argv) {
  long ms = argc > 0 ? atol(argv[0]) : 20;
  char line[32];
  signal(SIGPIPE, SIG_DFL);
  for (unsigned long n = 1;; ++n) {
    snprintf(line, sizeof line, "%lu\n", n);
    write_all(1, line, strlen(line));
    sleep_ms(ms);
  }
  return 0;
}

static int consume(int argc, char **argv) {
  if (argc < 1) return 2;
  int fd = open_append(argv[0]);
  append_start_line(fd);
  char buf[4096], line[4200];
  size_t used = 0;
  unsigned long k = 0;
  for (;;) {
    ssize_t n = read(0, buf + used, sizeof buf - used - 1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) die("read");
    if (n == 0) return 0;
    used += (size_t)n;
    char *start = buf, *nl;
    while ((nl = memchr(start, '\n', used - (size_t)(start - buf))) != NULL) {
      *nl = '\0';
      snprintf(line, sizeof line, "%lu %s\n", ++k, start);
      append_line(fd, line);
      start = nl + 1;
    }
    used -= (size_t)(start - buf);
    memmove(buf, start, used);
    if (used == sizeof buf - 1) used = 0; /* an absurdly long line: drop it */
  }
}

static uint32_t crc_table[256];

static uint32_t crc32_of(const unsigned char *p, size_t len) {
  if (crc_table[1] == 0) {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      crc_table[i] = c;
    }
  }
  uint32_t c = 0xFFFFFFFFu;
  while (len--) c = crc_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

static volatile sig_atomic_t sum_requested;

static void on_usr1(int sig) {
  (void)sig;
  sum_requested = 1;
}

static int memory(int argc, char **argv) {
  if (argc < 2) return 2;
  size_t mib = argc > 2 ? (size_t)atol(argv[2]) : 64;
  long ms = argc > 3 ? atol(argv[3]) : 50;
  size_t pages = mib * 256;
  unsigned char *buf = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (buf == MAP_FAILED) die("mmap");
  for (size_t p = 0; p < pages; ++p) {
    uint64_t *w = (uint64_t *)(buf + p * PAGE);
    for (int i = 0; i < PAGE / 8; i += 2) {
      w[i] = p;
      w[i + 1] = MAGIC;
    }
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1;
  sa.sa_flags = SA_RESTART;
  sigaction(SIGUSR1, &sa, NULL);
  int ticks = open_append(argv[0]);
  int sums = open_append(argv[1]);
  append_start_line(ticks);
  char line[64];
  for (uint64_t t = 1;; ++t) {
    uint64_t *w = (uint64_t *)(buf + ((t * STRIDE) % pages) * PAGE);
    w[0] = t;
    snprintf(line, sizeof line, "%llu\n", (unsigned long long)t);
    append_line(ticks, line);
    if (sum_requested) {
      sum_requested = 0;
      snprintf(line, sizeof line, "%llu %08x\n", (unsigned long long)t,
               crc32_of(buf, pages * PAGE));
      append_line(sums, line);
    }
    sleep_ms(ms);
  }
}

static void must(int ok, const char *what) {
  if (!ok) die(what);
}

static void write_file(const char *path, const char *text, mode_t mode) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  must(fd >= 0, path);
  write_all(fd, text, strlen(text));
  must(fchmod(fd, mode) == 0, "fchmod");
  close(fd);
}

/* The image has /etc/motd, /etc/app.conf (0644), /opt/app/{a.txt,sub/b.txt} and /data. */
static int do_mutate(void) {
  must(unlink("/etc/motd") == 0, "unlink /etc/motd");                 /* image file deleted */
  must(system("rm -rf /opt/app") == 0, "rm -rf /opt/app");            /* directory replaced */
  must(mkdir("/opt/app", 0750) == 0, "mkdir /opt/app");
  write_file("/opt/app/new.txt", "replaced directory\n", 0644);
  must(mkdir("/opt/app/deeper", 0700) == 0, "mkdir /opt/app/deeper");
  write_file("/opt/app/deeper/leaf", "leaf\n", 0600);
  write_file("/data/original", "linked content\n", 0644);             /* hardlink */
  must(link("/data/original", "/data/hardlink") == 0, "link");
  must(symlink("../etc/passwd", "/data/rel-symlink") == 0, "symlink"); /* symlinks */
  must(symlink("/etc/passwd", "/data/abs-symlink") == 0, "symlink");
  must(symlink("/nonexistent/target", "/data/dangling") == 0, "symlink");
  write_file("/data/xattr.txt", "has xattrs\n", 0644);                 /* user.* xattr */
  must(setxattr("/data/xattr.txt", "user.arch.test", "value-1", 7, 0) == 0, "setxattr");
  must(setxattr("/data/xattr.txt", "user.arch.bin", "\0\1\2\377", 4, 0) == 0, "setxattr");
  int fd = open("/data/sparse", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644); /* hole */
  must(fd >= 0, "open /data/sparse");
  write_all(fd, "head", 4);
  must(lseek(fd, 4 << 20, SEEK_SET) == 4 << 20, "lseek");
  write_all(fd, "tail", 4);
  close(fd);
  must(chmod("/etc/app.conf", 0600) == 0, "chmod /etc/app.conf");     /* mode changed */
  must(chown("/etc/app.conf", 1234, 5678) == 0, "chown /etc/app.conf");
  write_file("/data/setuid", "setuid bit\n", 04755);
  must(chmod("/data/setuid", 04755) == 0, "chmod /data/setuid");
  fd = open("/etc/passwd", O_WRONLY | O_APPEND | O_CLOEXEC);          /* image file changed */
  must(fd >= 0, "open /etc/passwd");
  write_all(fd, "app:x:1234:5678::/data:/bin/sh\n", 31);
  close(fd);
  must(mkdir("/data/empty-dir", 0711) == 0, "mkdir");
  must(mkfifo("/data/fifo", 0640) == 0, "mkfifo");
  fd = open("/ready", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644); /* differs per start */
  must(fd >= 0, "open /ready");
  append_start_line(fd);
  close(fd);
  for (;;) pause();
  return 0;
}

/* ---- SHA-256 (FIPS 180-4), for the lister ---- */
typedef struct {
  uint32_t h[8];
  uint64_t len;
  unsigned char buf[64];
  size_t used;
} Sha256;

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(Sha256 *s, const unsigned char *p) {
  uint32_t w[64], a, b, c, d, e, f, g, h;
  for (int i = 0; i < 16; ++i)
    w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
           p[4 * i + 3];
  for (int i = 16; i < 64; ++i) {
    uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3];
  e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
  for (int i = 0; i < 64; ++i) {
    uint32_t t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
    uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    h = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
  }
  s->h[0] += a, s->h[1] += b, s->h[2] += c, s->h[3] += d;
  s->h[4] += e, s->h[5] += f, s->h[6] += g, s->h[7] += h;
}

static void sha256_init(Sha256 *s) {
  static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  memcpy(s->h, iv, sizeof iv);
  s->len = 0;
  s->used = 0;
}

static void sha256_update(Sha256 *s, const unsigned char *p, size_t n) {
  s->len += n;
  while (n > 0) {
    size_t take = 64 - s->used < n ? 64 - s->used : n;
    memcpy(s->buf + s->used, p, take);
    s->used += take, p += take, n -= take;
    if (s->used == 64) {
      sha256_block(s, s->buf);
      s->used = 0;
    }
  }
}

static void sha256_hex(Sha256 *s, char out[65]) {
  uint64_t bits = s->len * 8;
  unsigned char pad = 0x80, zero = 0, len[8];
  sha256_update(s, &pad, 1);
  while (s->used != 56) sha256_update(s, &zero, 1);
  for (int i = 0; i < 8; ++i) len[i] = (unsigned char)(bits >> (56 - 8 * i));
  sha256_update(s, len, 8);
  for (int i = 0; i < 8; ++i) sprintf(out + 8 * i, "%08x", s->h[i]);
}

/* ---- lister ---- */
typedef struct {
  dev_t dev;
  ino_t ino;
  char *path;
} Link;
static Link *links;
static size_t nlinks;
static dev_t root_dev;

static void print_escaped(const char *s, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x21 || c >= 0x7f || c == '%' || c == '\t') printf("%%%02x", c);
    else putchar(c);
  }
}

static int compare_strings(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void list_entry(const char *path, const char *shown) {
  struct stat st;
  if (lstat(path, &st) != 0) die(path);
  char type = S_ISDIR(st.st_mode)    ? 'd'
              : S_ISREG(st.st_mode)  ? 'f'
              : S_ISLNK(st.st_mode)  ? 'l'
              : S_ISFIFO(st.st_mode) ? 'p'
              : S_ISCHR(st.st_mode)  ? 'c'
              : S_ISBLK(st.st_mode)  ? 'b'
                                     : 's';
  print_escaped(shown, strlen(shown));
  printf("\t%c\t%04o\t%u\t%u", type, (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid,
         (unsigned)st.st_gid);
  if (type == 'f') {
    printf("\tsize=%lld", (long long)st.st_size);
    char hex[65];
    Sha256 s;
    sha256_init(&s);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) die(path);
    unsigned char buf[65536];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) sha256_update(&s, buf, (size_t)n);
    if (n < 0) die(path);
    /* A hole: the first data at or after offset 0 is not followed by data everywhere. */
    off_t hole = lseek(fd, 0, SEEK_HOLE);
    close(fd);
    sha256_hex(&s, hex);
    printf("\tsha256=%s\tmtime=%lld\tholes=%s", hex, (long long)st.st_mtime,
           hole >= 0 && hole < st.st_size ? "yes" : "no");
    const char *group = "";
    if (st.st_nlink > 1) {
      for (size_t i = 0; i < nlinks; ++i)
        if (links[i].dev == st.st_dev && links[i].ino == st.st_ino) group = links[i].path;
      if (!*group) {
        links = realloc(links, (nlinks + 1) * sizeof *links);
        links[nlinks++] = (Link){st.st_dev, st.st_ino, strdup(shown)};
        group = shown;
      }
    }
    printf("\tnlink=%lu\tlinkgroup=", (unsigned long)st.st_nlink);
    print_escaped(group, strlen(group));
  } else if (type == 'l') {
    char target[4096];
    ssize_t n = readlink(path, target, sizeof target);
    if (n < 0) die(path);
    printf("\ttarget=");
    print_escaped(target, (size_t)n);
    printf("\tmtime=%lld", (long long)st.st_mtime);
  } else if (type == 'c' || type == 'b') {
    printf("\trdev=%llx", (unsigned long long)st.st_rdev);
  }
  char names[8192];
  const char *sorted[256];
  size_t count = 0;
  ssize_t len = llistxattr(path, names, sizeof names);
  for (ssize_t off = 0; len > 0 && off < len && count < 256;
       off += (ssize_t)strlen(names + off) + 1)
    sorted[count++] = names + off;
  qsort(sorted, count, sizeof *sorted, compare_strings); /* the kernel's order is arbitrary */
  printf("\txattrs=");
  for (size_t k = 0; k < count; ++k) {
    char value[4096];
    ssize_t vlen = lgetxattr(path, sorted[k], value, sizeof value);
    print_escaped(sorted[k], strlen(sorted[k]));
    putchar('=');
    for (ssize_t i = 0; i < vlen; ++i) printf("%02x", (unsigned char)value[i]);
    putchar(';');
  }
  putchar('\n');
}

static int skip_name(const struct dirent *e) {
  return strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
}

static void walk(const char *path, const char *shown) {
  struct dirent **entries;
  int n = scandir(path, &entries, skip_name, alphasort);
  if (n < 0) die(path);
  for (int i = 0; i < n; ++i) {
    char child[4096], child_shown[4096];
    snprintf(child, sizeof child, "%s/%s", strcmp(path, "/") == 0 ? "" : path, entries[i]->d_name);
    snprintf(child_shown, sizeof child_shown, "%s/%s", strcmp(shown, "/") == 0 ? "" : shown,
             entries[i]->d_name);
    struct stat st;
    if (lstat(child, &st) != 0) die(child);
    free(entries[i]);
    if (st.st_dev != root_dev) continue; /* another mount: /proc, /dev, /sys, bind mounts */
    list_entry(child, child_shown);
    if (S_ISDIR(st.st_mode)) walk(child, child_shown);
  }
  free(entries);
}

static int list(int argc, char **argv) {
  const char *root = argc > 0 ? argv[0] : "/";
  struct stat st;
  if (lstat(root, &st) != 0) die(root);
  root_dev = st.st_dev;
  list_entry(root, "/");
  walk(root, "/");
  return fflush(stdout) == 0 ? 0 : 1;
}

/* One line (without '\n') from a socket, byte by byte; -1 on EOF or error. */
static int read_line(int fd, char *buf, size_t size) {
  size_t n = 0;
  while (n + 1 < size) {
    char c;
    ssize_t got = read(fd, &c, 1);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return -1;
    if (c == '\n') break;
    buf[n++] = c;
  }
  buf[n] = '\0';
  return (int)n;
}

static int tcpclient(int argc, char **argv) {
  if (argc < 3) return 2;
  long ms = argc > 3 ? atol(argv[3]) : 20;
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
  if (inet_pton(AF_INET, argv[0], &addr.sin_addr) != 1) return 2;
  signal(SIGPIPE, SIG_IGN);
  int log = open_append(argv[2]);
  append_start_line(log);
  char line[64], want[64];
  for (;;) {
    int sk = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sk < 0) die("socket");
    if (connect(sk, (struct sockaddr *)&addr, sizeof addr) != 0) {
      close(sk);
      sleep_ms(100);
      continue;
    }
    append_line(log, "connect\n");
    const char *why = "greeting";
    if (read_line(sk, line, sizeof line) >= 0) {
      unsigned long next = strtoul(line, NULL, 10) + 1;
      for (;; ++next) {
        snprintf(want, sizeof want, "%lu\n", next);
        ssize_t len = (ssize_t)strlen(want);
        if (send(sk, want, (size_t)len, 0) != len) {
          why = "send";
          break;
        }
        if (read_line(sk, line, sizeof line) < 0) {
          why = "ack";
          break;
        }
        if (strtoul(line, NULL, 10) != next) {
          why = "wrong ack";
          break;
        }
        sleep_ms(ms);
      }
    }
    snprintf(line, sizeof line, "lost %s %d\n", why, errno);
    append_line(log, line);
    close(sk);
    sleep_ms(100);
  }
}

static int tcpserver(int argc, char **argv) {
  if (argc < 2) return 2;
  signal(SIGPIPE, SIG_IGN);
  int log = open_append(argv[1]);
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int on = 1;
  if (s < 0 || setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0) die("socket");
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[0]))};
  if (bind(s, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(s, 16) != 0) die("bind");
  unsigned long held = 0;
  char line[64];
  for (;;) {
    int c = accept4(s, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0) continue;
    snprintf(line, sizeof line, "%lu\n", held);
    if (send(c, line, strlen(line), 0) > 0) {
      while (read_line(c, line, sizeof line - 1) >= 0) {
        held = strtoul(line, NULL, 10);
        size_t len = strlen(line);
        line[len] = '\n';
        line[len + 1] = '\0';
        append_line(log, line);
        if (send(c, line, len + 1, 0) != (ssize_t)(len + 1)) break;
      }
    }
    close(c);
  }
}

/* ---- lock, trylock: file locks that must survive a checkpoint ---- */

static int take_lock(int fd, const char *kind, int wait) {
  if (strcmp(kind, "flock") == 0) return flock(fd, LOCK_EX | (wait ? 0 : LOCK_NB));
  struct flock fl;
  memset(&fl, 0, sizeof fl);
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  return fcntl(fd, wait ? F_SETLKW : F_SETLK, &fl);
}

/* Whether /proc/self/fdinfo/FD lists a lock of this kind: the kernel shows there the locks
 * this open file (flock) or this process (POSIX) owns, in /proc/locks's format. */
static int holds_lock(int fd, const char *kind) {
  char path[64], buf[4096];
  snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
  int info = open(path, O_RDONLY | O_CLOEXEC);
  if (info < 0) return 0;
  ssize_t n = read(info, buf, sizeof buf - 1);
  close(info);
  buf[n > 0 ? n : 0] = '\0';
  const char *want = strcmp(kind, "flock") == 0 ? "FLOCK" : "POSIX";
  for (char *line = strstr(buf, "lock:"); line != NULL; line = strstr(line + 5, "lock:")) {
    char *end = strchr(line, '\n');
    size_t len = end ? (size_t)(end - line) : strlen(line);
    if (memmem(line, len, want, strlen(want)) && memmem(line, len, "WRITE", 5)) return 1;
  }
  return 0;
}

static int lock_holder(int argc, char **argv) {
  if (argc < 3) return 2;
  long ms = argc > 3 ? atol(argv[3]) : 50;
  int fd = open(argv[1], O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) die(argv[1]);
  if (take_lock(fd, argv[0], 1) != 0) die("lock");
  int status = open_append(argv[2]);
  append_start_line(status);
  char line[48];
  for (unsigned long n = 1;; ++n) {
    snprintf(line, sizeof line, "%lu %s\n", n, holds_lock(fd, argv[0]) ? "held" : "lost");
    append_line(status, line);
    sleep_ms(ms);
  }
}

static int trylock(int argc, char **argv) {
  if (argc < 2) return 2;
  int fd = open(argv[1], O_RDWR | O_CLOEXEC);
  if (fd < 0) die(argv[1]);
  if (take_lock(fd, argv[0], 0) == 0) {
    puts("got");
    return 1;
  }
  if (errno != EWOULDBLOCK && errno != EAGAIN && errno != EACCES) die("trylock");
  puts("busy");
  return 0;
}

/* ---- ghost: a deleted file kept open, its content checked ---- */

static void fill_page(unsigned char *page, uint64_t p) {
  uint64_t *w = (uint64_t *)page;
  for (int i = 0; i < PAGE / 8; i += 2) {
    w[i] = p;
    w[i + 1] = MAGIC;
  }
}

static int ghost(int argc, char **argv) {
  if (argc < 3) return 2;
  size_t pages = (size_t)atol(argv[1]) * 256;
  long ms = argc > 3 ? atol(argv[3]) : 50;
  int fd = open(argv[0], O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) die(argv[0]);
  static unsigned char page[PAGE], want[PAGE];
  for (size_t p = 0; p < pages; ++p) {
    fill_page(page, p);
    write_all(fd, (const char *)page, PAGE);
  }
  if (fsync(fd) != 0) die("fsync");
  if (unlink(argv[0]) != 0) die("unlink");
  int status = open_append(argv[2]);
  append_start_line(status);
  char line[48];
  for (unsigned long n = 1;; ++n) {
    int ok = 1;
    for (size_t p = 0; p < pages && ok; ++p) {
      fill_page(want, p);
      ok = pread(fd, page, PAGE, (off_t)(p * PAGE)) == PAGE && memcmp(page, want, PAGE) == 0;
    }
    struct stat st;
    ok = ok && fstat(fd, &st) == 0 && (size_t)st.st_size == pages * PAGE;
    snprintf(line, sizeof line, "%lu %s\n", n, ok ? "ok" : "bad");
    append_line(status, line);
    sleep_ms(ms);
  }
}

/* ---- iouring: a process CRIU cannot dump ---- */

static int iouring(int argc, char **argv) {
  if (argc < 1) return 2;
  unsigned char params[120]; /* struct io_uring_params: 120 bytes, zeroed = defaults */
  memset(params, 0, sizeof params);
  long ring = syscall(425 /* __NR_io_uring_setup */, 8, params);
  if (ring < 0) die("io_uring_setup");
  char *counter_argv[] = {argv[0], "50", NULL};
  return counter(2, counter_argv);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: archtest counter|produce|consume|memory|mutate|list|lock|trylock|ghost|iouring ...\n");
    return 2;
  }
  const char *cmd = argv[1];
  argc -= 2;
  argv += 2;
  if (strcmp(cmd, "counter") == 0) return counter(argc, argv);
  if (strcmp(cmd, "tcpclient") == 0) return tcpclient(argc, argv);
  if (strcmp(cmd, "tcpserver") == 0) return tcpserver(argc, argv);
  if (strcmp(cmd, "produce") == 0) return produce(argc, argv);
  if (strcmp(cmd, "consume") == 0) return consume(argc, argv);
  if (strcmp(cmd, "memory") == 0) return memory(argc, argv);
  if (strcmp(cmd, "mutate") == 0) return do_mutate();
  if (strcmp(cmd, "list") == 0) return list(argc, argv);
  if (strcmp(cmd, "lock") == 0) return lock_holder(argc, argv);
  if (strcmp(cmd, "trylock") == 0) return trylock(argc, argv);
  if (strcmp(cmd, "ghost") == 0) return ghost(argc, argv);
  if (strcmp(cmd, "iouring") == 0) return iouring(argc, argv);
  fprintf(stderr, "archtest: unknown command %s\n", cmd);
  return 2;
}
