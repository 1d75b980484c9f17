from imagegen_conformance.harness.cli import main

main()
