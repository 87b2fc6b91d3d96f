from stages.warm import forward

forward()  # hands the command to `make study`'s warm-start server where there is one; returns where not

from stages import main  # noqa: E402

main()
