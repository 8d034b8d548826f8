/* crash-at-syn.c -- opens its raw socket, then dies of a segmentation fault at the first SYN
 * to port 80 (a NULL pointer written through), for tcplab's grading tests: each lesson is an
 * error that says the program was killed by SIGSEGV. */
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <sys/socket.h>

int main(void)
{
    unsigned char pkt[65536];
    int fd = socket(AF_INET, SOCK_RAW, IPPROTO_TCP);
    if (fd < 0) {
        perror("socket");
        return 2;
    }
    fprintf(stderr, "crash-at-syn: waiting for a SYN\n");
    for (;;) {
        ssize_t n = recv(fd, pkt, sizeof pkt, 0);
        if (n < 40)
            continue;
        struct iphdr *ip = (struct iphdr *)pkt;
        struct tcphdr *tcp = (struct tcphdr *)(pkt + ip->ihl * 4);
        if (ntohs(tcp->dest) == 80 && tcp->syn) {
            volatile int *nothing = NULL;
            *nothing = 1;
        }
    }
}
