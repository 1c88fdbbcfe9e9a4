import ArgumentParser

@main
struct FlamingoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flamingo",
        abstract: "Flamingo visual language model inference, in one process or pipelined across MPI ranks.",
        subcommands: []
    )
}
