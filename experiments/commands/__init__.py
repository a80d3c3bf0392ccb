"""The ``ttb`` command line: ``main`` builds the parser from one module per command group. The only
package where imports sit inside functions (so ``ttb --help`` starts without torch)."""
