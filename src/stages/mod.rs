/*!
Stages: the steps of a study, wired from models, data and evaluation.
*/
