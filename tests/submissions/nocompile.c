/* nocompile.c -- a submission that does not compile (a missing semicolon and an undeclared
 * name), for tcplab's grading tests: a grade of 0 with the compiler's message. */
#include <stdio.h>

int main(void)
{
    int fd = socket(AF_INET, SOCK_RAW, IPPROTO_TCP)
    printf("%d\n", fd);
    return 0;
}
