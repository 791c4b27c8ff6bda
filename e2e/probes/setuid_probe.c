/* Prints the effective uid it runs with: installed setuid root in a test
 * image, it shows whether a process may raise its privileges through a
 * setuid binary (no_new_privs unset) or not (as critest's nonewprivs
 * image does). */
#include <stdio.h>
#include <unistd.h>

int main(void) {
    printf("Effective uid: %d\n", (int)geteuid());
    return 0;
}
