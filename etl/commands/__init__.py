"""The command line's modules (``deepcraters SUBCOMMAND``): the top floor. They may import any
package (lazily, inside ``main``, so ``--help`` stays fast); no package imports them."""
