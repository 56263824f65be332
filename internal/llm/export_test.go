package llm

// FitImage is fitImage, for the tests of what it costs.
var FitImage = fitImage
