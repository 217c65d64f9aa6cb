/* main.c - `dbpool <command> [options]`: picks the command and prints the
 * top-level help. Each command lives in its own file (bench.c, drill.c, check.c). */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} commands[] = {
    {"bench", cmd_bench, "load a database through the pool (or --direct) and report throughput"},
    {"drill", cmd_drill, "outage drill through a fault relay, with an HTML/SVG timeline report"},
    {"check", cmd_check, "connect once: server version, round-trip latency, TLS"},
};

static void help(FILE *f)
{
    fprintf(f, "usage: dbpool <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(f, "  %-7s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n"
               "`dbpool <command> --help` describes a command's options.\n"
               DATABASE_HELP DURATION_HELP "Passwords are never printed.\n"
               "Exit codes: 0 success, 1 failure, 2 bad command line.\n"
               "`dbpool --version` (-V) prints the version.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        help(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    char shown[ARG_SHOWN_LEN];

    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        if (strcmp(cmd, "help") == 0 && argc > 2) {
            /* `dbpool help bench` = `dbpool bench --help` */
            char *hv[] = {argv[2], (char *)"--help", NULL};
            for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
                if (strcmp(argv[2], commands[i].name) == 0)
                    return commands[i].run(2, hv);
            fprintf(stderr, "dbpool: unknown command %s\n",
                    arg_shown(argv[2], shown, sizeof(shown)));
            return EXIT_USAGE;
        }
        help(stdout);
        return EXIT_OK;
    }
    if (strcmp(cmd, "-V") == 0 || strcmp(cmd, "--version") == 0) {
        /* the CLI links the library statically: one version, and libpq's */
        int pq = PQlibVersion();
        printf("dbpool %s (libpq %d.%d)\n", dbpool_version(), pq / 10000, pq % 10000);
        return EXIT_OK;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(cmd, commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    /* `dbpool URL` (the command forgotten): never echo a password */
    fprintf(stderr, "dbpool: unknown command %s (see dbpool --help)\n",
            arg_shown(cmd, shown, sizeof(shown)));
    return EXIT_USAGE;
}
