// swift-tools-version: 6.0
import PackageDescription

// Numeric code needs a target CPU and whole-module optimisation to vectorise (DESIGN.md §10).
let fastMath: [SwiftSetting] = [
    .unsafeFlags(["-Ounchecked", "-wmo", "-target-cpu", "native"], .when(configuration: .release)),
]

let package = Package(
    name: "flamingo-cluster",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "flamingo", targets: ["flamingo"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CMPI", pkgConfig: "ompi-c", providers: [.apt(["libopenmpi-dev"])]),
        .systemLibrary(name: "CImageCodecs", pkgConfig: "libpng", providers: [.apt(["libpng-dev", "libjpeg-dev"])]),
        .target(
            name: "FlamingoCore",
            dependencies: ["CBLAS"],
            swiftSettings: fastMath
        ),
        .target(
            name: "FlamingoModel",
            dependencies: ["FlamingoCore", "CImageCodecs", .product(name: "Logging", package: "swift-log")],
            swiftSettings: fastMath
        ),
        .target(
            name: "FlamingoCluster",
            dependencies: ["FlamingoModel", "CMPI", .product(name: "Logging", package: "swift-log")],
            swiftSettings: fastMath
        ),
        .executableTarget(
            name: "flamingo",
            dependencies: [
                "FlamingoCore", "FlamingoModel", "FlamingoCluster",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: fastMath
        ),
        .testTarget(name: "FlamingoCoreTests", dependencies: ["FlamingoCore"]),
        .testTarget(name: "FlamingoModelTests", dependencies: ["FlamingoModel"]),
        .testTarget(name: "FlamingoCLITests", dependencies: ["FlamingoModel"]),
    ]
)
