from prior_training.cli import main

main()
